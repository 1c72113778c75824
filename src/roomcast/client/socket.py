"""Async client for the TCP line protocol (optionally TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from roomcast import jsonwire
from roomcast.client.backoff import Backoff
from roomcast.client.base import BaseClient, ReplyHook

Address = tuple[str, int]


class SocketClient(BaseClient[Address]):
    """``async with SocketClient(host, port) as client: await client.room_add("r")``.

    Several servers: ``SocketClient(["10.0.0.1:5000", "10.0.0.2:5000"])`` (each
    ``"host:port"``, ``"host"`` for the default ``port``, or a ``(host, port)`` tuple);
    the client connects to the first that answers and fails over to the next.

    Replies are matched to requests by ``messageCount``: the server numbers every line it
    receives on a connection, and this client sends one line per request.
    """

    def __init__(
        self,
        host: str | Sequence[str | Address] = "127.0.0.1",
        port: int = 5000,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        reconnect_attempts: int | None = None,
    ) -> None:
        super().__init__(
            _addresses(host, port),
            timeout=timeout,
            reconnect=reconnect,
            backoff=backoff,
            reconnect_attempts=reconnect_attempts,
        )
        self.ssl_context = ssl_context
        self._stream: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sent = 0
        self._lock = asyncio.Lock()

    @property
    def host(self) -> str:
        """The host of the server in use (or tried last)."""
        return self._targets[self._index][0]

    @property
    def port(self) -> int:
        return self._targets[self._index][1]

    async def send_line(self, line: str) -> dict[str, Any]:
        """Send one raw protocol line once connected; return the reply to it."""
        if "\n" in line or "\r" in line:
            raise ValueError("one line at a time")
        await self._ready()
        return await self._send_line(line)

    # transport ---------------------------------------------------------------------------

    def _describe(self, target: Address) -> str:
        host, port = target
        scheme = "tls" if self.ssl_context is not None else "tcp"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    async def _open_transport(self, target: Address) -> None:
        host, port = target
        self._stream, self._writer = await asyncio.open_connection(
            host, port, ssl=self.ssl_context, limit=16 << 20
        )
        self._sent = 0  # the server numbers the lines of each connection from 1

    async def _receive(self) -> AsyncIterator[tuple[Any, Any]]:
        stream = self._stream
        assert stream is not None
        while True:
            line = await stream.readline()
            if not line:
                return
            try:
                message = jsonwire.loads(line)
            except ValueError:
                continue
            yield message, message.get("messageCount") if isinstance(message, dict) else None

    async def _close_transport(self, polite: bool) -> None:
        writer, self._writer = self._writer, None
        if writer is None or writer.is_closing():
            return
        if polite:
            with contextlib.suppress(OSError):
                writer.write(b"quit\n")
                await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):  # TimeoutError included: a peer that hangs
            await asyncio.wait_for(writer.wait_closed(), self.timeout)

    async def _send_line(self, line: str, hook: ReplyHook | None = None) -> dict[str, Any]:
        async with self._lock:  # numbering and writing must not interleave
            writer = self._writer
            if writer is None or writer.is_closing():
                raise ConnectionError("connection lost")
            self._sent += 1
            number = self._sent
            future = self._expect(number, hook)
            writer.write(line.encode() + b"\n")
        try:
            await writer.drain()
        except OSError:
            self._pending.pop(number, None)
            raise ConnectionError("connection lost") from None
        return await self._wait(number, future)

    async def _transmit_verb(
        self, verb: str, args: dict[str, Any], hook: ReplyHook | None
    ) -> dict[str, Any]:
        words = [verb]
        if "room" in args:
            words.append(str(args["room"]))
        if "since" in args:
            words += [str(args["since"]), str(args["epoch"])]
        if "message" in args:
            words.append(str(args["message"]).replace("\n", " ").replace("\r", " "))
        return await self._send_line(" ".join(words), hook)

    async def _transmit_action(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_line(jsonwire.dumps({"action": name, "params": params}).decode())


def _addresses(host: str | Sequence[str | Address], port: int) -> list[Address]:
    if isinstance(host, str):
        return [(host, port)]
    return [_address(item, port) for item in host]


def _address(item: str | Address, default_port: int) -> Address:
    """``(host, port)`` from ``"host"``, ``"host:port"``, ``"[v6]:port"`` or a tuple."""
    if not isinstance(item, str):
        host, port = item
        return str(host), int(port)
    parts = urlsplit(item if "//" in item else f"//{item}")
    if not parts.hostname:
        raise ValueError(f"not a host or host:port: {item!r}")
    return parts.hostname, parts.port or default_port
