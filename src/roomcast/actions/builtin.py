"""Actions every node has: ``status``, ``createChatRoom`` and ``authenticate``."""

from __future__ import annotations

import asyncio
import time

from roomcast.actions.action import Action, ActionData
from roomcast.actions.errors import ActionError
from roomcast.auth import INVALID_TOKEN, InvalidToken
from roomcast.cluster.errors import REDIS_DOWN


class Status(Action):
    name = "status"
    description = "This node's id, uptime, and its connection and room counts."

    async def run(self, data: ActionData) -> None:
        api = data.api
        data.response.update(
            {
                "id": api.id,
                "uptime": int((time.monotonic() - api.started_monotonic) * 1000),
                "connections": len(api.connections),
                "rooms": None,
                "localRooms": len(api.chat_room.index),
            }
        )
        # What this node knows keeps being answered while Redis is away; only the
        # cluster-wide room count needs it.
        try:
            async with asyncio.timeout(2.0):
                data.response["rooms"] = await api.chat_room.count()
        except (*REDIS_DOWN, TimeoutError) as error:
            data.response["redisError"] = str(error) or type(error).__name__


class RoomExists(Exception):
    def __init__(self) -> None:
        super().__init__("room exists")


class CreateChatRoom(Action):
    name = "createChatRoom"
    description = "Create a chat room; fails with 'room exists' when it already does."
    inputs = {"name": {"required": True}}

    async def run(self, data: ActionData) -> None:
        if await data.api.chat_room.add(str(data.params["name"])) == 0:
            raise RoomExists()
        data.response["didCreate"] = True


class TokenRefused(ActionError):
    status = 401

    def __init__(self) -> None:
        super().__init__(INVALID_TOKEN)


class Authenticate(Action):
    name = "authenticate"
    description = (
        "Present a signed token (JWT): the connection's user becomes its sub claim; "
        "fails with 'invalid token'."
    )
    inputs = {"token": {"required": True}}

    async def run(self, data: ActionData) -> None:
        try:
            data.api.auth.authenticate(data.connection, str(data.params["token"]))
        except InvalidToken:
            raise TokenRefused() from None
        data.response["user"] = data.connection.user


BUILTIN_ACTIONS: tuple[type[Action], ...] = (Status, CreateChatRoom, Authenticate)
