"""The local room index: which of this node's connections are in which room."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roomcast.connection import Connection


class RoomIndex:
    """Room name -> this node's member connections, in join order.

    Fan-out reads one dict here instead of scanning every connection of the node.
    """

    __slots__ = ("_rooms",)

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, Connection]] = {}

    def add(self, room: str, connection: Connection) -> bool:
        """Add ``connection`` to ``room``; return True when it is the room's first local member."""
        members = self._rooms.get(room)
        if members is None:
            members = self._rooms[room] = {}
        members[connection.id] = connection
        return len(members) == 1

    def remove(self, room: str, connection_id: str) -> bool:
        """Remove a member; return True when the room has no local member left."""
        members = self._rooms.get(room)
        if members is None:
            return False
        members.pop(connection_id, None)
        if not members:
            del self._rooms[room]
            return True
        return False

    def members(self, room: str) -> list[Connection]:
        members = self._rooms.get(room)
        return list(members.values()) if members else []

    def has_members(self, room: str) -> bool:
        return room in self._rooms

    def rooms(self) -> list[str]:
        return list(self._rooms)

    def __len__(self) -> int:
        return len(self._rooms)
