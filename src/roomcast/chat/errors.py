"""Chat-room errors. Each one's ``str()`` is the exact text clients see on the wire."""

from __future__ import annotations

from roomcast.cluster.errors import WireErrors


class ChatError(Exception):
    """Base of every chat-room error; ``str(error)`` is the wire text."""


class RoomAndMessageRequired(ChatError):
    def __init__(self) -> None:
        super().__init__("both room and message are required")


class RoomRequired(ChatError):
    def __init__(self) -> None:
        super().__init__("a room is required")


class RoomNotFound(ChatError):
    def __init__(self) -> None:
        super().__init__("room does not exist")


class AlreadyInRoom(ChatError):
    def __init__(self, room: str) -> None:
        super().__init__(f"connection already in this room ({room})")


class NotInRoom(ChatError):
    def __init__(self, room: str) -> None:
        super().__init__(f"connection not in this room ({room})")


class ConnectionNotFound(ChatError):
    def __init__(self) -> None:
        super().__init__("connection not found")


class InvalidRoomName(ChatError):
    def __init__(self) -> None:
        super().__init__("invalid room name")


class TooManyRooms(ChatError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"too many rooms ({limit} max)")


class RoomLimitReached(ChatError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"room limit reached ({limit} rooms)")


class MessageTooLong(ChatError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message is too long ({size} > {limit} bytes)")


class RemoteError(ChatError):
    """An error raised on another node, carried back by RPC with its message unchanged."""


class RpcTimeout(ChatError):
    def __init__(self) -> None:
        super().__init__("RPC Timeout")


#: How chat errors cross the cluster: rebuilt with their class and text on the caller.
WIRE_ERRORS = WireErrors(
    timeout=RpcTimeout,
    not_found=ConnectionNotFound,
    remote=RemoteError,
    known=(
        RoomAndMessageRequired,
        RoomRequired,
        RoomNotFound,
        AlreadyInRoom,
        NotInRoom,
        ConnectionNotFound,
        RpcTimeout,
        InvalidRoomName,
        TooManyRooms,
        RoomLimitReached,
        MessageTooLong,
    ),
)


def error_from_wire(kind: str, message: str) -> Exception:
    """Rebuild an error that crossed the cluster: same class when known, same text always."""
    return WIRE_ERRORS.rebuild(kind, message)
