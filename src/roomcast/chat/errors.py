"""Chat-room errors. Each one's ``str()`` is the exact text clients see on the wire."""

from __future__ import annotations


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


class RemoteError(ChatError):
    """An error raised on another node, carried back by RPC with its message unchanged."""


class RpcTimeout(ChatError):
    def __init__(self) -> None:
        super().__init__("RPC Timeout")


_BY_NAME: dict[str, type[ChatError]] = {
    cls.__name__: cls
    for cls in (
        RoomAndMessageRequired,
        RoomRequired,
        RoomNotFound,
        AlreadyInRoom,
        NotInRoom,
        ConnectionNotFound,
        RpcTimeout,
    )
}


def error_from_wire(kind: str, message: str) -> ChatError:
    """Rebuild an error that crossed the cluster: same class when known, same text always."""
    cls = _BY_NAME.get(kind)
    error = RemoteError(message) if cls is None else cls.__new__(cls)
    Exception.__init__(error, message)
    return error
