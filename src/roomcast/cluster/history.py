"""Per-room message history in Redis: offsets, epochs and the kept messages.

A room with history has one key, its *log*: a list of the room's last messages, each the
exact bytes clients receive, the newest last. The newest one's position suffix holds the
room's last offset and its epoch (the name of this run of the history), so nothing else
needs storing; a room where nothing was said yet holds a marker at offset 0
(``{"offset":0,"epoch":"E"}``), which no read returns. One Lua script reads the newest
position, stores the message with the next offset, trims the log, refreshes its TTL and
publishes, so every node sees the same offset and epoch for a message and appending costs
one round trip. When the log is missing (first message, Redis restarted empty, the key
expired, failover to an empty replica) the script starts a new epoch: a new epoch means
history may have been lost.

A stored or published message is the body the node encoded with
``,"offset":N,"epoch":"E"`` inserted before its final ``}`` (:func:`with_position`);
:func:`split_position` takes exactly that suffix off again, so a receiver can check a
signature made over the original body.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from roomcast.cluster.envelope import BusKey, seal
from roomcast.cluster.keys import Keys

#: What an epoch is made of (and what :func:`split_position` accepts as one).
EPOCH_CHARACTERS = "A-Za-z0-9"

_SUFFIX = re.compile(rb'"offset":(0|[1-9][0-9]*),"epoch":"([A-Za-z0-9]+)"\}\Z')


def with_position(body: bytes, offset: int, epoch: str) -> bytes:
    """``body`` (a JSON object) with ``"offset"`` and ``"epoch"`` added as its last keys.

    The history script does the same in Lua; this is its reference. Raises ValueError
    when ``body`` is not a JSON object's bytes or ``epoch`` is not ``[A-Za-z0-9]+``.
    """
    if not body.endswith(b"}") or not body.startswith(b"{"):
        raise ValueError("a positioned message must be a JSON object")
    if not re.fullmatch(f"[{EPOCH_CHARACTERS}]+", epoch):
        raise ValueError(f"an epoch is made of {EPOCH_CHARACTERS}, not {epoch!r}")
    separator = b"" if body == b"{}" else b","
    return b'%s%s"offset":%d,"epoch":"%s"}' % (body[:-1], separator, offset, epoch.encode())


def split_position(data: bytes) -> tuple[bytes, int, str] | None:
    """Undo :func:`with_position`: ``(original body, offset, epoch)``, or None when
    ``data`` does not end with a position suffix.

    Exactly one suffix is taken off, so a body that itself ended with such keys comes
    back unchanged.
    """
    match = _SUFFIX.search(data)
    if match is None:
        return None
    start = match.start()
    if start >= 2 and data[start - 1 : start] == b",":
        body = data[: start - 1] + b"}"
    elif start == 1 and data[:1] == b"{":
        body = b"{}"
    else:
        return None
    return body, int(match.group(1)), match.group(2).decode()


def signed_header(key: BusKey, sender: str, body: bytes, *, channel: str) -> bytes:
    """The envelope header line (``"\\n"`` included) that signs ``body`` on ``channel``.

    A history room's channel carries this header followed by the positioned body; a
    receiver takes the position off (:func:`split_position`) and verifies the header
    against the body as said. Raises ``EnvelopeError("too large")`` like :func:`seal`.
    """
    sealed = seal(key, sender, body, channel=channel.encode())
    return sealed[: len(sealed) - len(body)]


def position_of(data: bytes) -> int | None:
    """The offset a stored or published message carries, or None when it has none."""
    match = _SUFFIX.search(data)
    return int(match.group(1)) if match is not None else None


# The newest entry's position, or a new epoch (at offset 0) when the log is empty or was
# not written by us. Every redis.call counts on the embedded store, where each costs far
# more than in Redis: none is spent needlessly.
_POSITION = """
local function position(log, prefix)
  local newest = redis.call('LINDEX', log, -1)
  if newest then
    local offset, epoch = string.match(newest, '"offset":(%d+),"epoch":"(%w+)"}$')
    if epoch then return tonumber(offset), epoch, false end
    redis.call('DEL', log)
  end
  local now = redis.call('TIME')
  return 0, prefix .. now[1] .. string.format('%06d', tonumber(now[2])), true
end
"""

#: The append script (KEYS: log. ARGV: header, body, size, ttl (ms), epoch prefix,
#: publish command ('' for none), channel. Returns {offset, epoch}); call it with the
#: arguments :func:`append_arguments` builds and read its result with :func:`appended`.
APPEND_SCRIPT = (
    _POSITION
    + """
local log = KEYS[1]
local header, body, size = ARGV[1], ARGV[2], tonumber(ARGV[3])
local offset, epoch = position(log, ARGV[5])
offset = offset + 1
local separator = ','
if body == '{}' then separator = '' end
local kept = string.sub(body, 1, -2) .. separator .. '"offset":' .. string.format('%d', offset)
  .. ',"epoch":"' .. epoch .. '"}'
if redis.call('RPUSH', log, kept) > size then
  redis.call('LTRIM', log, -size, -1)
end
redis.call('PEXPIRE', log, ARGV[4])
if ARGV[6] ~= '' then
  redis.call(ARGV[6], ARGV[7], header .. kept)
end
return {offset, epoch}
"""
)

# KEYS: log. ARGV: since, limit (0: all), ttl (ms), epoch prefix.
# Returns {epoch, last offset, first kept offset, {messages with offset > since}}.
_READ = (
    _POSITION
    + """
local log = KEYS[1]
local since, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local offset, epoch, new = position(log, ARGV[4])
if new then
  redis.call('RPUSH', log, '{"offset":0,"epoch":"' .. epoch .. '"}')
  redis.call('PEXPIRE', log, ARGV[3])
end
local kept = redis.call('LLEN', log)
local first = offset - kept + 1
local messages = {}
if since < offset then
  local from = since + 1 - first
  if from < 0 then from = 0 end
  local to = -1
  if limit > 0 then to = from + limit - 1 end
  messages = redis.call('LRANGE', log, from, to)
end
return {epoch, offset, first, messages}
"""
)


def epoch_prefix() -> str:
    """A random start for the epochs one writer creates: a room whose history was lost
    never gets an epoch it had before (the rest is Redis's clock)."""
    return os.urandom(4).hex()


def append_arguments(
    keys: Keys,
    room: str,
    header: bytes,
    body: bytes,
    *,
    size: int,
    ttl: float,
    prefix: str,
    publish_command: str,
) -> tuple[list[str], list[Any]]:
    """``(keys, args)`` of :data:`APPEND_SCRIPT` keeping ``body`` (a JSON object's bytes)
    as ``room``'s next message and publishing ``header`` + the positioned body with
    ``publish_command`` (``PUBLISH``, ``SPUBLISH``, or ``""`` for none)."""
    if not body.startswith(b"{") or not body.endswith(b"}"):
        raise ValueError("a message in a room with history must be a JSON object")
    args = [header, body, size, _milliseconds(ttl), prefix, publish_command]
    return [keys.history(room)], [*args, keys.room_channel(room)]


def appended(result: Any) -> tuple[int, str]:
    """The ``(offset, epoch)`` the append script returned."""
    return int(result[0]), _text(result[1])


@dataclass
class HistoryPolicy:
    """Which rooms keep history, how many messages and how long (the ``[chat]`` settings)."""

    size: int
    ttl: float
    rooms: list[str] = field(default_factory=lambda: ["*"])
    _kept: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def keeps(self, room: str) -> bool:
        """True when ``room`` keeps history (a glob of ``rooms`` matches it)."""
        kept = self._kept.get(room)
        if kept is None:
            if len(self._kept) > 10_000:
                self._kept.clear()
            kept = self._kept[room] = self.size > 0 and any(
                fnmatch.fnmatchcase(room, pattern) for pattern in self.rooms
            )
        return kept


def history_policy(size: int, ttl: float, rooms: Iterable[str]) -> HistoryPolicy | None:
    """The policy for these settings, or None when no room keeps history (``size`` 0)."""
    return HistoryPolicy(size, ttl, list(rooms)) if size > 0 else None


@dataclass(frozen=True, slots=True)
class HistoryState:
    """What a room's history holds, as read at one moment."""

    epoch: str
    #: The last offset given in this epoch, 0 when nothing was said.
    offset: int
    #: The oldest offset still kept (0 while the epoch's start marker is kept).
    first: int
    #: The kept messages read, oldest first, each as clients receive it.
    messages: list[bytes]

    def covers(self, since: int) -> bool:
        """True when every message after ``since`` is still kept (none may be missing)."""
        return self.first - 1 <= since <= self.offset


class HistoryStore:
    """Appends to and reads rooms' histories; each call is one Redis round trip."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, publish_command: str = "PUBLISH") -> None:
        self.keys = keys
        #: The command the append script publishes with ('' to publish nothing).
        self.publish_command = publish_command
        self._prefix = epoch_prefix()
        self._redis = redis
        self._append = redis.register_script(APPEND_SCRIPT)
        self._read = redis.register_script(_READ)

    async def append(
        self, room: str, header: bytes, body: bytes, *, size: int, ttl: float
    ) -> tuple[int, str]:
        """Keep ``body`` (a JSON object's bytes) as the room's next message and publish
        ``header`` + the positioned body on its channel; return ``(offset, epoch)``."""
        keys, args = append_arguments(
            self.keys,
            room,
            header,
            body,
            size=size,
            ttl=ttl,
            prefix=self._prefix,
            publish_command=self.publish_command,
        )
        return appended(await self._append(keys=keys, args=args))

    async def read(self, room: str, since: int, limit: int, *, ttl: float) -> HistoryState:
        """The room's epoch, last offset and at most ``limit`` (0: every) kept messages
        after ``since``; a room with no history yet gets its epoch (offset 0) here."""
        result: Any = await self._read(
            keys=[self.keys.history(room)],
            args=[since, limit, _milliseconds(ttl), self._prefix],
        )
        epoch, offset, first, messages = result
        return HistoryState(_text(epoch), int(offset), int(first), [bytes(m) for m in messages])

    async def drop(self, room: str) -> None:
        """Forget the room's history; a room made again later starts a new epoch."""
        await self._redis.delete(self.keys.history(room))


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
