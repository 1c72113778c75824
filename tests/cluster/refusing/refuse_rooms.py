"""Chat middleware for one node only: refuses joins to "closed-*", leaves from "sticky-*"."""

from __future__ import annotations

from typing import Any

from roomcast import Api, ChatMiddleware


def initialize(api: Api) -> None:
    def join(connection: Any, room: str) -> None:
        if room.startswith("closed-"):
            raise PermissionError(f"{api.id} refuses joins to {room}")

    async def leave(connection: Any, room: str) -> None:
        if room.startswith("sticky-"):
            raise PermissionError(f"{api.id} refuses leaves from {room}")

    api.chat_room.add_middleware(ChatMiddleware(name="refuse-rooms", join=join, leave=leave))
