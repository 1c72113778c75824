"""Async client for the WebSocket protocol (aiohttp)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from roomcast import jsonwire
from roomcast.client.backoff import Backoff
from roomcast.client.base import BaseClient, ReplyHook

_QUIT = '{"event":"quit"}'


class WebSocketClient(BaseClient[str]):
    """``async with WebSocketClient("ws://127.0.0.1:8080/ws") as client: ...``.

    Several servers: ``WebSocketClient(["ws://a:8080/ws", "ws://b:8080/ws"])``; the
    client connects to the first that answers and fails over to the next.

    Replies are matched to requests by the ``messageId`` this client sends.
    """

    _connect_errors = (OSError, aiohttp.ClientError)

    def __init__(
        self,
        url: str | Sequence[str] = "ws://127.0.0.1:8080/ws",
        *,
        timeout: float = 10.0,
        heartbeat: float = 30.0,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        reconnect_attempts: int | None = None,
    ) -> None:
        super().__init__(
            [url] if isinstance(url, str) else list(url),
            timeout=timeout,
            reconnect=reconnect,
            backoff=backoff,
            reconnect_attempts=reconnect_attempts,
        )
        self.heartbeat = heartbeat
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def send_event(self, event: str, **fields: Any) -> dict[str, Any]:
        """Send ``{"event": event, ...}`` with a fresh messageId; return the reply to it."""
        await self._ready()
        return await self._send_event(event, fields, None)

    # transport ---------------------------------------------------------------------------

    def _describe(self, target: str) -> str:
        return target

    async def _open_transport(self, target: str) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(
            target,
            heartbeat=self.heartbeat,
            timeout=aiohttp.ClientWSTimeout(ws_close=self.timeout),
        )

    async def _receive(self) -> AsyncIterator[tuple[Any, Any]]:
        ws = self._ws
        assert ws is not None
        async for frame in ws:
            if frame.type is aiohttp.WSMsgType.ERROR:
                raise ConnectionError(str(ws.exception() or "WebSocket error"))
            if frame.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                message = jsonwire.loads(frame.data)
            except ValueError:
                continue
            yield message, message.get("messageId") if isinstance(message, dict) else None

    async def _close_transport(self, polite: bool) -> None:
        ws, self._ws = self._ws, None
        if ws is None or ws.closed:
            return
        if polite:
            with contextlib.suppress(Exception):
                await ws.send_str(_QUIT)
        await ws.close()

    async def _release(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _send_event(
        self, event: str, fields: dict[str, Any], hook: ReplyHook | None
    ) -> dict[str, Any]:
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionError("connection lost")
        message_id = next(self._ids)
        future = self._expect(message_id, hook)
        try:
            await ws.send_str(
                jsonwire.dumps({"event": event, "messageId": message_id, **fields}).decode()
            )
        except (OSError, aiohttp.ClientError) as error:
            self._pending.pop(message_id, None)
            raise ConnectionError(f"connection lost ({error})") from None
        return await self._wait(message_id, future)

    async def _transmit_verb(
        self, verb: str, args: dict[str, Any], hook: ReplyHook | None
    ) -> dict[str, Any]:
        return await self._send_event(verb, args, hook)

    async def _transmit_action(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_event("action", {"params": {**params, "action": name}}, None)
