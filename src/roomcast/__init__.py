"""roomcast: real-time chat rooms for Python, ActionHero's chat system on asyncio."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("roomcast")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

from roomcast.actions import Action, ActionData, ActionError, ActionMiddleware
from roomcast.api import Api
from roomcast.chat.errors import (
    AlreadyInRoom,
    ChatError,
    ConnectionNotFound,
    NotInRoom,
    RemoteError,
    RoomAndMessageRequired,
    RoomNotFound,
    RoomRequired,
    RpcTimeout,
)
from roomcast.chat.middleware import ChatMiddleware
from roomcast.config import Config, load_config
from roomcast.connection import Connection, ConnectionMiddleware

__all__ = [
    "Action",
    "ActionData",
    "ActionError",
    "ActionMiddleware",
    "AlreadyInRoom",
    "Api",
    "ChatError",
    "ChatMiddleware",
    "Config",
    "Connection",
    "ConnectionMiddleware",
    "ConnectionNotFound",
    "NotInRoom",
    "RemoteError",
    "RoomAndMessageRequired",
    "RoomNotFound",
    "RoomRequired",
    "RpcTimeout",
    "__version__",
    "load_config",
]
