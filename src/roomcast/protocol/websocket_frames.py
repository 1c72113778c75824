"""Server-to-client WebSocket frames, built by aiohttp's own frame writer.

A chat message is framed once per node and the same bytes are written to every member's
transport. Framing is aiohttp's: its writer writes into a buffer here instead of a socket.
"""

from __future__ import annotations

import struct
from typing import Any

from aiohttp import WSMsgType
from aiohttp._websocket.writer import WebSocketWriter


class _FrameBuffer:
    """Just enough of a transport for ``WebSocketWriter`` to write a frame into."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.chunks.append(bytes(data))

    def is_closing(self) -> bool:
        return False


_buffer = _FrameBuffer()
_writer = WebSocketWriter(None, _buffer, use_mask=False)  # type: ignore[arg-type]
_TEXT = int(WSMsgType.TEXT)
_PING = int(WSMsgType.PING)
_PONG = int(WSMsgType.PONG)
_CLOSE = int(WSMsgType.CLOSE)
_MAX_CONTROL_PAYLOAD = 125  # RFC 6455 §5.5


def _frame(payload: bytes, opcode: int) -> bytes:
    _writer._write_websocket_frame(payload, opcode, 0)
    frame = b"".join(_buffer.chunks)
    _buffer.chunks.clear()
    _writer._output_size = 0
    return frame


def text_frame(payload: bytes) -> bytes:
    """Return the complete unmasked, uncompressed text frame carrying ``payload``."""
    return _frame(payload, _TEXT)


def pong_frame(payload: bytes = b"") -> bytes:
    return _frame(bytes(payload[:_MAX_CONTROL_PAYLOAD]), _PONG)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit a control frame."""
    body = struct.pack("!H", code) + reason.encode()[: _MAX_CONTROL_PAYLOAD - 2]
    return _frame(body, _CLOSE)


PING = _frame(b"", _PING)


def check() -> Any:
    """Raise if aiohttp's writer no longer frames as expected (run at import)."""
    frame = text_frame(b"hi")
    if frame != b"\x81\x02hi" or close_frame(1000) != b"\x88\x02\x03\xe8":
        raise RuntimeError(f"unexpected WebSocket frame from aiohttp: {frame!r}")
    return frame


check()
