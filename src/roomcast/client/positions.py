"""Where a client is in each room's history: the last offset and epoch it saw.

Pure bookkeeping, no I/O: the client feeds it every chat message and asks it, when it
re-joins a room, where to resume from.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Position(NamedTuple):
    """The last chat message seen in a room: its ``offset`` in the room's ``epoch``."""

    offset: int
    epoch: str


class RoomPositions:
    """The last position seen per room, and the duplicate filter it gives."""

    __slots__ = ("_epochs", "_offsets")

    def __init__(self) -> None:
        self._offsets: dict[str, int] = {}
        self._epochs: dict[str, str] = {}

    def observe(self, message: dict[str, Any]) -> bool:
        """Record a chat message's position; False when it is a duplicate (drop it).

        A duplicate is a message of the epoch already seen whose offset is not past the
        last one. A message of a new epoch starts the room over. Messages without a
        position (rooms without history) always pass.
        """
        offset = message.get("offset")
        epoch = message.get("epoch")
        room = message.get("room")
        if type(offset) is not int or not isinstance(epoch, str) or not isinstance(room, str):
            return True
        if self._epochs.get(room) == epoch and offset <= self._offsets[room]:
            return False
        self._offsets[room] = offset
        self._epochs[room] = epoch
        return True

    def get(self, room: str) -> Position | None:
        """Where to resume ``room`` from, or None when no position was seen there."""
        epoch = self._epochs.get(room)
        return None if epoch is None else Position(self._offsets[room], epoch)

    def resume(self, room: str, epoch: str, offset: int) -> None:
        """Start ``room`` over at ``offset`` of ``epoch`` (a join told us where it is)."""
        self._offsets[room] = offset
        self._epochs[room] = epoch

    def forget(self, room: str) -> None:
        """Drop what is known about ``room`` (left it, or it keeps no history)."""
        self._offsets.pop(room, None)
        self._epochs.pop(room, None)

    def clear(self) -> None:
        self._offsets.clear()
        self._epochs.clear()
