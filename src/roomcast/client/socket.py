"""Async client for the TCP line protocol (optionally TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from roomcast import jsonwire
from roomcast.client.base import BaseClient


class SocketClient(BaseClient):
    """``async with SocketClient(host, port) as client: await client.room_add("r")``.

    Replies are matched to requests by ``messageCount``: the server numbers every line it
    receives, and this client sends one line per request.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5000,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(timeout)
        self.host, self.port, self.ssl_context = host, port, ssl_context
        self._reader_stream: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sent = 0
        self._lock = asyncio.Lock()

    async def connect(self) -> dict[str, Any]:
        """Connect and wait for the welcome; returns it."""
        self._reader_stream, self._writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ssl_context, limit=16 << 20
        )
        self._reader = asyncio.create_task(self._read_forever())
        await asyncio.wait_for(self._welcomed.wait(), self.timeout)
        assert self.welcome is not None
        return self.welcome

    async def disconnect(self) -> None:
        """Say ``quit`` and close."""
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(OSError):
                self._writer.write(b"quit\n")
                await self._writer.drain()
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self.closed.set()

    async def __aenter__(self) -> SocketClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def send_line(self, line: str) -> dict[str, Any]:
        """Send one raw protocol line; return the reply to it."""
        if "\n" in line or "\r" in line:
            raise ValueError("one line at a time")
        async with self._lock:  # numbering and writing must not interleave
            assert self._writer is not None, "call connect() first"
            self._sent += 1
            number = self._sent
            future = self._expect(number)
            self._writer.write(line.encode() + b"\n")
        await self._writer.drain()
        return await self._wait(number, future)

    async def _verb(self, verb: str, **args: Any) -> Any:
        words = [verb]
        if "room" in args:
            words.append(str(args["room"]))
        if "message" in args:
            words.append(str(args["message"]).replace("\n", " "))
        return self._verb_result(await self.send_line(" ".join(words)))

    async def _action(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        line = jsonwire.dumps({"action": name, "params": params}).decode()
        return await self.send_line(line)

    async def _read_forever(self) -> None:
        assert self._reader_stream is not None
        try:
            while True:
                try:
                    line = await self._reader_stream.readline()
                except OSError:  # reset by the server: closed like an EOF
                    break
                if not line:
                    break
                try:
                    message = jsonwire.loads(line)
                except ValueError:
                    continue
                key = message.get("messageCount") if isinstance(message, dict) else None
                await self._dispatch(message, key)
        finally:
            self._fail_pending(ConnectionError("connection closed"))
