"""Async client for the WebSocket protocol (aiohttp)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import aiohttp

from roomcast import jsonwire
from roomcast.client.base import BaseClient


class WebSocketClient(BaseClient):
    """``async with WebSocketClient("ws://127.0.0.1:8080/ws") as client: ...``.

    Replies are matched to requests by the ``messageId`` this client sends.
    """

    def __init__(self, url: str = "ws://127.0.0.1:8080/ws", *, timeout: float = 10.0) -> None:
        super().__init__(timeout)
        self.url = url
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def connect(self) -> dict[str, Any]:
        """Connect and wait for the welcome; returns it."""
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url, heartbeat=30)
        self._reader = asyncio.create_task(self._read_forever())
        await asyncio.wait_for(self._welcomed.wait(), self.timeout)
        assert self.welcome is not None
        return self.welcome

    async def disconnect(self) -> None:
        """Say ``quit`` and close."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.send_str('{"event":"quit"}')
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()
        self.closed.set()

    async def __aenter__(self) -> WebSocketClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def send_event(self, event: str, **fields: Any) -> dict[str, Any]:
        """Send ``{"event": event, ...}`` with a fresh messageId; return the reply."""
        assert self._ws is not None, "call connect() first"
        message_id = next(self._ids)
        future = self._expect(message_id)
        await self._ws.send_str(
            jsonwire.dumps({"event": event, "messageId": message_id, **fields}).decode()
        )
        return await self._wait(message_id, future)

    async def _verb(self, verb: str, **args: Any) -> Any:
        return self._verb_result(await self.send_event(verb, **args))

    async def _action(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self.send_event("action", params={**params, "action": name})

    async def _read_forever(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = jsonwire.loads(frame.data)
                except ValueError:
                    continue
                key = message.get("messageId") if isinstance(message, dict) else None
                await self._dispatch(message, key)
        finally:
            self._fail_pending(ConnectionError("connection closed"))
