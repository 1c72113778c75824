"""Chat rooms: the room API, its middleware, its errors and the local room index."""

from roomcast.chat.errors import ChatError
from roomcast.chat.middleware import ChatMiddleware
from roomcast.chat.room import ChatRoom
from roomcast.chat.room_index import RoomIndex

__all__ = ["ChatError", "ChatMiddleware", "ChatRoom", "RoomIndex"]
