"""roomcast: real-time chat rooms for Python, ActionHero's chat system on asyncio.

The public names below are imported on first use, so ``import roomcast.protocol…`` (pure
wire code) does not pull in the node, aiohttp or redis.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("roomcast")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from roomcast.actions import Action, ActionData, ActionError, ActionMiddleware
    from roomcast.api import Api
    from roomcast.chat.errors import (
        AlreadyInRoom,
        ChatError,
        ConnectionNotFound,
        InvalidRoomName,
        MessageTooLong,
        NotInRoom,
        RemoteError,
        RoomAndMessageRequired,
        RoomLimitReached,
        RoomNotFound,
        RoomRequired,
        RpcTimeout,
        TooManyRooms,
    )
    from roomcast.chat.middleware import ChatMiddleware
    from roomcast.config import Config, load_config
    from roomcast.connection import (
        Connection,
        ConnectionMiddleware,
        ConnectionRefused,
        ConnectionState,
    )

#: Where each public name lives.
_SOURCES = {
    "Action": "roomcast.actions",
    "ActionData": "roomcast.actions",
    "ActionError": "roomcast.actions",
    "ActionMiddleware": "roomcast.actions",
    "Api": "roomcast.api",
    "AlreadyInRoom": "roomcast.chat.errors",
    "ChatError": "roomcast.chat.errors",
    "ConnectionNotFound": "roomcast.chat.errors",
    "InvalidRoomName": "roomcast.chat.errors",
    "MessageTooLong": "roomcast.chat.errors",
    "RoomLimitReached": "roomcast.chat.errors",
    "TooManyRooms": "roomcast.chat.errors",
    "NotInRoom": "roomcast.chat.errors",
    "RemoteError": "roomcast.chat.errors",
    "RoomAndMessageRequired": "roomcast.chat.errors",
    "RoomNotFound": "roomcast.chat.errors",
    "RoomRequired": "roomcast.chat.errors",
    "RpcTimeout": "roomcast.chat.errors",
    "ChatMiddleware": "roomcast.chat.middleware",
    "Config": "roomcast.config",
    "load_config": "roomcast.config",
    "Connection": "roomcast.connection",
    "ConnectionMiddleware": "roomcast.connection",
    "ConnectionRefused": "roomcast.connection",
    "ConnectionState": "roomcast.connection",
}

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
    "ConnectionRefused",
    "ConnectionState",
    "InvalidRoomName",
    "MessageTooLong",
    "NotInRoom",
    "RemoteError",
    "RoomAndMessageRequired",
    "RoomLimitReached",
    "RoomNotFound",
    "RoomRequired",
    "RpcTimeout",
    "TooManyRooms",
    "__version__",
    "load_config",
]


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'roomcast' has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
