"""The TCP line protocol without sockets: bytes in, request events out.

:class:`LineSplitter` cuts a byte stream into lines (``\\n`` or ``\\r`` ends one; empty and
blank lines are ignored) and enforces the length limit, also on a line that never ends.
:func:`parse_line` turns one line into a request.
"""

from __future__ import annotations

import re
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

_LINE_END = re.compile(rb"[\r\n]")
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
    """Feed bytes, get :data:`LineEvent` s; keeps the unterminated tail between feeds."""

    __slots__ = ("_buffer", "_skipping", "max_length")

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self._buffer = b""
        self._skipping = False  # inside an over-long line: drop bytes until its end

    def feed(self, data: bytes) -> list[LineEvent]:
        if data == _CTRL_D or _TELNET_IP in data:
            return [Interrupt()]
        events: list[LineEvent] = []
        buffer = self._buffer + data if self._buffer else data
        start = 0
        for match in _LINE_END.finditer(buffer):
            end = match.start()
            if self._skipping:
                self._skipping = False
            elif end > start:
                raw = buffer[start:end]
                # A blank line is no request: it gets no reply, so it takes no messageCount.
                if len(raw) > self.max_length or not raw.isspace():
                    events.append(self._line(raw))
            start = match.end()
        tail = buffer[start:]
        if self._skipping:
            tail = b""
        elif len(tail) > self.max_length:
            events.append(TooLong(len(tail), self.max_length))
            tail = b""
            self._skipping = True
        self._buffer = tail
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
