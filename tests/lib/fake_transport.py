"""A stand-in for an asyncio transport, and a stream connection over it, for tests of
the write path (coalescing, write delays, slow consumers) without sockets."""

from __future__ import annotations

from typing import Any

from roomcast.servers.outbox import Outbox
from roomcast.servers.stream_connection import StreamConnection
from roomcast.testing import TestNode


class FakeTransport:
    """Records every write; ``unsent`` is what it claims still to owe the peer."""

    def __init__(self, *, closing: bool = False, unsent: int = 0) -> None:
        self.writes: list[bytes] = []
        self.closing = closing
        self.unsent = unsent
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def abort(self) -> None:
        self.aborted = self.closing = True

    def close(self) -> None:
        self.closing = True


class LineConnection(StreamConnection):
    def frame(self, data: bytes) -> bytes:
        return data + b"\n"


def stream(
    node: TestNode, transport: Any, limit: int = 1000, outbox: Outbox | None = None
) -> LineConnection:
    """A connection of ``node`` writing to ``transport`` (through ``outbox``, default the
    node's per-tick one)."""
    return LineConnection(node.api, transport, "127.0.0.1", 1, limit, outbox=outbox)
