"""Helpers for the web-server tests: a raw WebSocket client and small HTTP calls.

The raw client speaks the wire directly (aiohttp's client, JSON text frames) so the tests
see exactly what the server sends, independent of ``roomcast.client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from support import LOOPBACK

WELCOME = {"welcome": "Hello! Welcome to the roomcast api", "context": "api"}


def unique_room(prefix: str = "room") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def now_ms() -> int:
    return int(time.time() * 1000)


class RawWebSocket:
    """One WebSocket connection to ``/ws``; every wait is bounded by ``timeout``."""

    def __init__(
        self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, timeout: float
    ) -> None:
        self.session = session
        self.ws = ws
        self.timeout = timeout
        #: Messages ``read_until`` stepped over, oldest first.
        self.skipped: list[Any] = []

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,
        **ws_options: Any,
    ) -> RawWebSocket:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                f"http://{LOOPBACK}:{port}/ws", headers=headers, **ws_options
            )
        except BaseException:
            await session.close()
            raise
        return cls(session, ws, timeout)

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, bytes):
            await self.ws.send_bytes(message)
        elif isinstance(message, str):
            await self.ws.send_str(message)
        else:
            await self.ws.send_str(json.dumps(message))

    async def receive(self, timeout: float | None = None) -> Any:
        """The next text frame, decoded; fails on anything else."""
        frame = await self.ws.receive(timeout or self.timeout)
        assert frame.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {frame}"
        return json.loads(frame.data)

    async def read_until(
        self, predicate: Callable[[Any], bool], timeout: float | None = None
    ) -> Any:
        """Read frames until one satisfies ``predicate``; the others go to ``skipped``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching message; skipped {self.skipped!r}")
            message = await self.receive(remaining)
            if predicate(message):
                return message
            self.skipped.append(message)

    async def reply(self, timeout: float | None = None) -> dict[str, Any]:
        """The next ``context: response`` message."""
        return await self.read_until(_is_response, timeout)  # type: ignore[no-any-return]

    async def request(self, message: dict[str, Any] | str | bytes) -> dict[str, Any]:
        """Send one frame and return the next reply."""
        await self.send(message)
        return await self.reply()

    async def chat(self, timeout: float | None = None) -> dict[str, Any]:
        """The next chat message (``context: user``)."""
        return await self.read_until(  # type: ignore[no-any-return]
            lambda m: isinstance(m, dict) and m.get("context") == "user", timeout
        )

    async def next_chat(self, timeout: float | None = None) -> dict[str, Any]:
        """The oldest chat message not yet looked at: one stepped over earlier, or the next."""
        for index, message in enumerate(self.skipped):
            if isinstance(message, dict) and message.get("context") == "user":
                return self.skipped.pop(index)  # type: ignore[no-any-return]
        return await self.chat(timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        await self.session.close()


def _is_response(message: Any) -> bool:
    return isinstance(message, dict) and message.get("context") == "response"


@dataclass
class HttpReply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def cookies(self, name: str) -> list[str]:
        """Every ``Set-Cookie`` header value setting cookie ``name``."""
        return [
            value
            for value in self.headers.get_all("Set-Cookie") or []
            if value.startswith(f"{name}=")
        ]


def http_request(
    port: int,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> HttpReply:
    """One HTTP request with ``target`` sent byte for byte (no client-side normalising)."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return HttpReply(response.status, response.headers, response.read())
    finally:
        connection.close()


def create_room(port: int, name: str) -> None:
    """Create chat room ``name`` through the HTTP ``createChatRoom`` action."""
    reply = http_request(port, "GET", f"/api/createChatRoom?name={name}")
    assert reply.status == 200, (reply.status, reply.body)


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Async poll of ``predicate`` (sync or async) until truthy, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)
