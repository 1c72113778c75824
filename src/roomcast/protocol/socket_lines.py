"""The TCP line protocol without sockets: bytes in, request events out.

:class:`LineSplitter` cuts a byte stream into lines (``\\n`` or ``\\r`` ends one; empty and
blank lines are ignored) and enforces the length limit, also on a line that never ends.
:func:`parse_line` turns one line into a request.
"""

from __future__ import annotations

from dataclasses import dataclass

from roomcast import jsonwire
from roomcast.protocol.requests import (
    VERBS,
    ActionRequest,
    FileRequest,
    InvalidRequest,
    QuitRequest,
    Request,
    VerbRequest,
)

_LINE_END_BYTES = b"\r\n"
# Telnet's "interrupt process" (Ctrl-C) and a lone end-of-transmission (Ctrl-D).
_TELNET_IP = b"\xff\xf4"
_CTRL_D = b"\x04"


@dataclass(frozen=True, slots=True)
class Line:
    """One complete line, decoded."""

    text: str


@dataclass(frozen=True, slots=True)
class TooLong:
    """A line (or an unterminated buffer) over the limit; it is dropped."""

    received: int
    limit: int


@dataclass(frozen=True, slots=True)
class NotUtf8:
    """A line that is not valid UTF-8; it is dropped."""


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The client pressed Ctrl-C or Ctrl-D in telnet: close the connection."""


LineEvent = Line | TooLong | NotUtf8 | Interrupt


class LineSplitter:
    """Feed bytes, get :data:`LineEvent` s; keeps the unterminated tail between feeds.

    Each feed scans only the bytes it is given: the unterminated tail waits in a
    ``bytearray`` (appended to, never rescanned), so a line sent one byte at a time costs
    O(1) per byte.
    """

    __slots__ = ("_pending", "_skipping", "max_length")

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self._pending: bytearray | None = None  # the unterminated tail; made on first use
        self._skipping = False  # inside an over-long line: drop bytes until its end

    def feed(self, data: bytes) -> list[LineEvent]:
        # 0xff never occurs in UTF-8: one memchr usually settles it (a two-byte search
        # over a long read costs a hundred times more).
        if data == _CTRL_D or (b"\xff" in data and _TELNET_IP in data):
            return [Interrupt()]
        events: list[LineEvent] = []
        pending = self._pending
        # Searched with memchr and cut by bytes.splitlines (which ends lines at \n, \r
        # and \r\n only): a regular expression scans a megabyte some hundred times slower.
        if b"\n" not in data and b"\r" not in data:  # the bytes only extend the tail
            if not self._skipping:
                if pending is None:
                    pending = self._pending = bytearray()
                pending += data
                if len(pending) > self.max_length:
                    events.append(TooLong(len(pending), self.max_length))
                    pending.clear()
                    self._skipping = True
            return events
        lines = data.splitlines()
        tail = b"" if data[-1] in _LINE_END_BYTES else lines.pop()
        first = 0
        if self._skipping:  # the over-long line ends here; its bytes were never kept
            self._skipping = False
            first = 1
        elif pending:  # the tail kept so far and the start of ``data`` are one line
            pending += lines[0]
            lines[0] = bytes(pending)
            pending.clear()
        limit = self.max_length
        for raw in lines[first:] if first else lines:
            # A blank line is no request: it gets no reply, so it takes no messageCount.
            if len(raw) > limit or (raw and not raw.isspace()):
                events.append(self._line(raw))
        if tail:
            if len(tail) > limit:
                events.append(TooLong(len(tail), limit))
                self._skipping = True
            else:
                if pending is None:
                    pending = self._pending = bytearray()
                pending += tail
        return events

    def _line(self, raw: bytes) -> LineEvent:
        if len(raw) > self.max_length:
            return TooLong(len(raw), self.max_length)
        try:
            return Line(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return NotUtf8()


def parse_line(text: str) -> Request | None:
    """Turn one socket line into a request; None for a blank line."""
    line = text.strip()
    if not line:
        return None
    if line[0] in '{["':
        return _parse_json(line)
    verb, _, rest = line.partition(" ")
    rest = rest.strip()
    if verb in ("quit", "exit"):
        return QuitRequest()
    if verb == "file":
        return FileRequest(rest)
    if verb not in VERBS:
        return ActionRequest(verb, None)
    if verb == "paramAdd":
        first, _, after = rest.partition(" ")
        if "=" in first:
            key, _, value = rest.partition("=")
            return VerbRequest(verb, {"key": key, "value": value})
        return VerbRequest(verb, {"key": first, "value": after.strip() or None})
    if verb in ("paramView", "paramDelete"):
        return VerbRequest(verb, {"key": rest.split(" ", 1)[0]})
    if verb in ("roomLeave", "roomView"):
        return VerbRequest(verb, {"room": rest.split(" ", 1)[0]})
    if verb in ("roomAdd", "roomHistory"):
        # roomAdd <room> [<since> <epoch>]; roomHistory <room> [<since> [<limit>]]
        words = rest.split()
        args = {"room": words[0] if words else ""}
        names = ("since", "epoch") if verb == "roomAdd" else ("since", "limit")
        args.update(zip(names, words[1:3], strict=False))
        return VerbRequest(verb, args)
    if verb == "say":
        room, _, message = rest.partition(" ")
        return VerbRequest(verb, {"room": room, "message": message.strip()})
    return VerbRequest(verb, {})


def _parse_json(line: str) -> Request:
    try:
        value = jsonwire.loads(line)
    except ValueError:
        return InvalidRequest("invalid JSON request")
    if not isinstance(value, dict):
        return InvalidRequest("a JSON request must be an object")
    params = value.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return InvalidRequest("params must be a JSON object")
    action = value.get("action", params.get("action"))
    if action is not None and not isinstance(action, str):
        return InvalidRequest("action must be a string")
    return ActionRequest(action, dict(params))
