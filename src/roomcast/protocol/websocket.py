"""The server side of the WebSocket protocol after the handshake, without sockets.

Give :meth:`ServerProtocol.receive_data` the bytes a client sent, then take
:meth:`~ServerProtocol.events_received` (the messages, pings, pongs and close it sent)
and write :meth:`~ServerProtocol.data_to_send` (pongs and close frames) to the client.
Once :attr:`~ServerProtocol.state` is not ``OPEN``, write what is left to send and close
the connection: nothing more is read. A client that breaks the protocol never raises:
it gets the close frame its fault calls for (1002 protocol error, 1007 invalid data,
1009 too big) and the state turns ``CLOSING``.

Messages to the client are not framed here: a chat message is framed once for every
member (:mod:`roomcast.protocol.websocket_frames`) and written by the caller.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass
from typing import Any

from roomcast.protocol.websocket_frames import close_frame, pong_frame
from roomcast.protocol.websocket_handshake import DeflateParameters

__all__ = [
    "BinaryMessage",
    "Close",
    "CloseCode",
    "Event",
    "Ping",
    "Pong",
    "ServerProtocol",
    "State",
    "TextMessage",
    "unmask",
    "valid_close_code",
]


class State(enum.Enum):
    """Where a connection is in its life after the handshake."""

    OPEN = "open"  # messages flow
    CLOSING = "closing"  # the server sent its close frame; nothing more is read
    CLOSED = "closed"  # both closes exchanged, or the connection ended


OPEN, CLOSING, CLOSED = State.OPEN, State.CLOSING, State.CLOSED


class CloseCode(enum.IntEnum):
    """The close codes this server sends."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    NO_STATUS = 1005  # reported for an empty close frame; never sent
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    TOO_BIG = 1009


@dataclass(frozen=True, slots=True)
class TextMessage:
    text: str


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """A close frame: its code (1005 when it had none) and reason."""

    code: int
    reason: str


Event = TextMessage | BinaryMessage | Ping | Pong | Close

_FIN, _RSV1, _RSV23, _MASKED = 0x80, 0x40, 0x30, 0x80
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_SYNC_TAIL = b"\x00\x00\xff\xff"  # the sender removed it from every compressed message


def unmask(mask: bytes | bytearray, data: bytes | bytearray) -> bytes:
    """``data`` XORed with the 4-byte ``mask`` repeated: a client frame's payload.

    One big-integer XOR instead of a loop over bytes: linear, and done in C.
    """
    size = len(data)
    key = int.from_bytes((mask * ((size >> 2) + 1))[:size], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(size, "little")


def valid_close_code(code: int) -> bool:
    """Whether a client may send ``code`` in a close frame (the others are reserved,
    or only reported locally, like 1005 and 1006)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class _PeerError(Exception):
    """The client broke the protocol: close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ServerProtocol:
    """One WebSocket connection, server side, after the opening handshake.

    ``max_size`` bounds a message (after reassembly and decompression); ``deflate`` is
    the permessage-deflate agreement, None when none was negotiated. Nothing is
    allocated per connection until a message needs it: an idle client costs this
    object only.
    """

    __slots__ = (
        "_buffer",
        "_deflate",
        "_events",
        "_inflater",
        "_message",
        "_message_kind",
        "_need",
        "_output",
        "close_rcvd",
        "close_sent",
        "max_size",
        "state",
    )

    def __init__(self, max_size: int, deflate: DeflateParameters | None = None) -> None:
        self.state = OPEN
        self.max_size = max_size
        #: The client's close frame, once it sent one.
        self.close_rcvd: Close | None = None
        #: The close frame this side sent, once it did.
        self.close_sent: Close | None = None
        self._deflate = deflate
        self._buffer: bytearray | None = None  # the start of an incomplete frame
        self._need = 0  # bytes _buffer must hold before a frame can be parsed further
        self._message: bytearray | None = None  # a fragmented message read so far
        self._message_kind = 0  # its first frame's RSV1 and opcode bits; 0: none open
        self._inflater: Any = None  # zlib's decompressor, while one is needed
        self._events: list[Event] | None = None
        self._output: list[bytes] | None = None

    # input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Parse bytes the client sent; then read events and write :meth:`data_to_send`.

        Only ``data`` is parsed: the start of an incomplete frame is kept, and looked at
        again only once enough bytes arrived to complete its header or its payload.
        """
        if self.state is not OPEN or not data:
            return
        buffer = self._buffer
        if buffer is None:
            view: bytes | bytearray = data
        else:
            buffer += data
            if len(buffer) < self._need:
                return
            view = buffer
        try:
            end = self._parse(view)
        except _PeerError as error:
            self.send_close(error.code, error.reason)
            return
        if self.state is not OPEN:
            return
        if end == len(view):
            self._buffer = None
        elif buffer is None:
            self._buffer = bytearray(memoryview(data)[end:])
        else:
            del buffer[:end]

    def receive_eof(self) -> None:
        """The connection ended: nothing more can be read or sent."""
        self.state = CLOSED
        self._drop_buffers()

    def events_received(self) -> list[Event]:
        """The events parsed since the last call, oldest first."""
        events = self._events
        if events is None:
            return []
        self._events = None
        return events

    def data_to_send(self) -> bytes:
        """The bytes to write to the client now (b"" for none)."""
        output = self._output
        if output is None:
            return b""
        self._output = None
        return output[0] if len(output) == 1 else b"".join(output)

    # output ------------------------------------------------------------------------------

    def send_close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake: a close frame goes to :meth:`data_to_send` and the
        state turns ``CLOSING``. Does nothing once a close was sent or received."""
        if self.state is not OPEN:
            return
        self.close_sent = Close(code, reason)
        self._send(close_frame(code, reason))
        self.state = CLOSING
        self._drop_buffers()

    # parsing -----------------------------------------------------------------------------

    def _parse(self, view: bytes | bytearray) -> int:
        """Handle the complete frames at the start of ``view``; return where they end."""
        pos = 0
        size = len(view)
        max_size = self.max_size
        while True:
            available = size - pos
            if available < 2:
                self._need = 2
                return pos
            first = view[pos]
            second = view[pos + 1]
            length = second ^ _MASKED
            if (first == _FIN | _TEXT or first == _FIN | _BINARY) and length < 126:
                # The usual frame: a whole small message, masked, no extension bits.
                end = pos + 6 + length
                if end > size:
                    self._need = 6 + length
                    return pos
                if self._message_kind:
                    raise _PeerError(
                        CloseCode.PROTOCOL_ERROR, "a new message before the last one ended"
                    )
                if length > max_size:
                    raise _PeerError(CloseCode.TOO_BIG, f"a message is at most {max_size} bytes")
                payload = unmask(view[pos + 2 : pos + 6], view[pos + 6 : end])
                pos = end
                self._message_done(first, payload)
                continue
            opcode = first & 0x0F
            if not second & _MASKED:
                raise _PeerError(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
            if first & _RSV23 or (
                first & _RSV1 and (self._deflate is None or opcode == _CONTINUATION or opcode > 2)
            ):
                raise _PeerError(CloseCode.PROTOCOL_ERROR, "reserved bits must be 0")
            length = second & 0x7F
            if opcode >= _CLOSE:
                if opcode > _PONG:
                    raise _PeerError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")
                if not first & _FIN:
                    raise _PeerError(
                        CloseCode.PROTOCOL_ERROR, "a control frame must not be fragmented"
                    )
                if length > 125:
                    raise _PeerError(
                        CloseCode.PROTOCOL_ERROR, "a control frame's payload is at most 125 bytes"
                    )
                head = 6
            else:
                if opcode > _BINARY:
                    raise _PeerError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")
                if opcode == _CONTINUATION:
                    if not self._message_kind:
                        raise _PeerError(
                            CloseCode.PROTOCOL_ERROR, "a continuation frame without a message"
                        )
                elif self._message_kind:
                    raise _PeerError(
                        CloseCode.PROTOCOL_ERROR, "a new message before the last one ended"
                    )
                if length == 126:
                    if available < 4:
                        self._need = 4
                        return pos
                    length = view[pos + 2] << 8 | view[pos + 3]
                    head = 8
                elif length == 127:
                    if available < 10:
                        self._need = 10
                        return pos
                    length = int.from_bytes(view[pos + 2 : pos + 10], "big")
                    head = 14
                else:
                    head = 6
                message = self._message
                if length + (len(message) if message is not None else 0) > max_size:
                    raise _PeerError(CloseCode.TOO_BIG, f"a message is at most {max_size} bytes")
            end = pos + head + length
            if end > size:
                self._need = head + length
                return pos
            payload = unmask(view[pos + head - 4 : pos + head], view[pos + head : end])
            pos = end
            if opcode >= _CLOSE:
                self._control(opcode, payload)
                if self.state is not OPEN:
                    return pos
            elif opcode:  # the first frame of a message
                if first & _FIN:
                    self._message_done(first & 0x4F, payload)
                else:
                    self._message_kind = first & 0x4F
                    self._message = bytearray(payload)
            else:
                message = self._message
                assert message is not None
                message += payload
                if first & _FIN:
                    kind = self._message_kind
                    self._message = None
                    self._message_kind = 0
                    self._message_done(kind, message)

    def _message_done(self, kind: int, payload: bytes | bytearray) -> None:
        if kind & _RSV1:
            payload = self._inflate(payload)
        if kind & 0x0F == _TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                raise _PeerError(CloseCode.INVALID_DATA, "a text message must be UTF-8") from None
            self._event(TextMessage(text))
        else:
            self._event(BinaryMessage(bytes(payload)))

    def _inflate(self, payload: bytes | bytearray) -> bytes:
        deflate = self._deflate
        assert deflate is not None  # RSV1 is refused without it
        inflater = self._inflater
        if inflater is None:
            inflater = zlib.decompressobj(-15)  # 15 reads any window the client chose
        limit = self.max_size
        try:
            data: bytes = inflater.decompress(payload + _SYNC_TAIL, limit + 1)
        except zlib.error:
            raise _PeerError(CloseCode.INVALID_DATA, "invalid compressed data") from None
        if len(data) > limit:  # a zip bomb stops here: never more than limit + 1 bytes
            raise _PeerError(CloseCode.TOO_BIG, f"a message is at most {limit} bytes")
        self._inflater = None if deflate.client_no_context_takeover else inflater
        return data

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == _PING:
            self._send(pong_frame(payload))
            self._event(Ping(payload))
        elif opcode == _PONG:
            self._event(Pong(payload))
        else:
            self._close_received(payload)

    def _close_received(self, payload: bytes) -> None:
        """Echo a valid close (an empty one with 1000); then the connection is closed."""
        if not payload:
            code, reason, answer = int(CloseCode.NO_STATUS), "", int(CloseCode.NORMAL)
        elif len(payload) == 1:
            raise _PeerError(CloseCode.PROTOCOL_ERROR, "a close frame's code takes 2 bytes")
        else:
            code = answer = payload[0] << 8 | payload[1]
            if not valid_close_code(code):
                raise _PeerError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise _PeerError(CloseCode.INVALID_DATA, "a close reason must be UTF-8") from None
        self.close_rcvd = close = Close(code, reason)
        self._event(close)
        self.close_sent = Close(answer, "")
        self._send(close_frame(answer))
        self.state = CLOSED
        self._drop_buffers()

    # helpers -----------------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        if self._events is None:
            self._events = [event]
        else:
            self._events.append(event)

    def _send(self, data: bytes) -> None:
        if self._output is None:
            self._output = [data]
        else:
            self._output.append(data)

    def _drop_buffers(self) -> None:
        self._buffer = None
        self._message = None
        self._message_kind = 0
        self._inflater = None
