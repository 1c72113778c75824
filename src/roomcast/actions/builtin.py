"""Actions every node has: ``status`` and ``createChatRoom``."""

from __future__ import annotations

import time

from roomcast.actions.action import Action, ActionData


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
                "rooms": await api.chat_room.count(),
                "localRooms": len(api.chat_room.index),
            }
        )


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


BUILTIN_ACTIONS: tuple[type[Action], ...] = (Status, CreateChatRoom)
