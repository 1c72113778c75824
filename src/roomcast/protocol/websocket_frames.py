"""Server-to-client WebSocket frames (RFC 6455, RFC 7692), built without sockets.

A chat message is framed once per node and the same bytes are written to every member's
transport, so these are plain functions returning complete frames: unmasked (a server
never masks), FIN set, the payload length in its shortest form.
"""

from __future__ import annotations

import struct
import zlib

_TEXT = 0x1
_CLOSE = 0x8
_PING = 0x9
_PONG = 0xA
_FIN = 0x80
_RSV1 = 0x40  # permessage-deflate: this message is compressed
MAX_CONTROL_PAYLOAD = 125  # a control frame's payload never exceeds this
_SYNC_TAIL = b"\x00\x00\xff\xff"  # ends every sync flush; the receiver adds it back

_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack


def frame(first_byte: int, payload: bytes) -> bytes:
    """One unmasked frame: ``first_byte`` (FIN, RSV and opcode bits), then ``payload``."""
    size = len(payload)
    if size < 126:
        return bytes((first_byte, size)) + payload
    if size < 1 << 16:
        return _pack_16(first_byte, 126, size) + payload
    return _pack_64(first_byte, 127, size) + payload


def text_frame(payload: bytes) -> bytes:
    """The complete uncompressed text frame carrying ``payload`` (UTF-8 the caller encoded)."""
    return frame(_FIN | _TEXT, payload)


def deflate(payload: bytes, window_bits: int) -> bytes:
    """``payload`` compressed as one permessage-deflate message with no context takeover.

    A fresh compressor per message: the result depends on nothing sent before, so one
    compressed frame can go to every client that agreed on ``window_bits``.
    """
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_SYNC_TAIL) else data


def deflate_text_frame(payload: bytes, window_bits: int) -> bytes:
    """The complete compressed text frame (RSV1 set) carrying ``payload``."""
    return frame(_FIN | _RSV1 | _TEXT, deflate(payload, window_bits))


def pong_frame(payload: bytes = b"") -> bytes:
    """The pong answering a ping with ``payload`` (cut to fit a control frame)."""
    return frame(_FIN | _PONG, bytes(payload[:MAX_CONTROL_PAYLOAD]))


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit a control frame (never mid-character)."""
    encoded = reason.encode()
    if len(encoded) > MAX_CONTROL_PAYLOAD - 2:
        encoded = encoded[: MAX_CONTROL_PAYLOAD - 2].decode(errors="ignore").encode()
    return frame(_FIN | _CLOSE, struct.pack("!H", code) + encoded)


#: The heartbeat's ping, the same bytes for every client.
PING = frame(_FIN | _PING, b"")
