"""A multiplayer game-state room: the server owns the state, ticks broadcast it, moves are
actions.

    roomcast start --actions examples/game

Clients join the room ``game`` (``roomAdd game``), receive ``{"tick": n, "players":
{id: {"x", "y"}}}`` as chat messages from ``0`` every ``TICK`` seconds, and move with
``{"action":"move","params":{"direction":"right"}}``. A player enters the game when it
joins the room and leaves it when it leaves the room (or disconnects).

The state lives in this node's memory: run one node for a game (with a cluster, players on
other nodes still receive the ticks, but their moves must reach this node).
"""

from __future__ import annotations

import asyncio
from typing import Any

from roomcast import Action, ActionData, ChatMiddleware

ROOM = "game"
TICK = 0.2  # seconds between state broadcasts
SIZE = 20  # the board is SIZE x SIZE; positions wrap around
STEPS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}

#: connection id -> position; only this module changes it.
players: dict[str, dict[str, int]] = {}


def _direction(value: Any) -> None:
    if value not in STEPS:
        raise ValueError(f"direction must be one of {', '.join(STEPS)}")


class Move(Action):
    name = "move"
    description = "Move your player one square: up, down, left or right."
    inputs = {"direction": {"required": True, "validator": _direction}}

    async def run(self, data: ActionData) -> None:
        position = players.get(data.connection.id)
        if position is None:
            raise PermissionError(f"join the room {ROOM} first")
        dx, dy = STEPS[data.params["direction"]]
        position["x"] = (position["x"] + dx) % SIZE
        position["y"] = (position["y"] + dy) % SIZE
        data.response["position"] = dict(position)


def enter(connection: Any, room: str) -> None:
    """join middleware: a connection joining the game gets a player in the middle."""
    if room == ROOM:
        players[connection.id] = {"x": SIZE // 2, "y": SIZE // 2}


def leave(connection: Any, room: str) -> None:
    """leave middleware: leaving the room (or disconnecting) removes the player."""
    if room == ROOM:
        players.pop(connection.id, None)


def no_chat(connection: Any, room: str, payload: dict[str, Any]) -> None:
    """on_say_receive: in the game room only the server speaks (its mock sender has id 0)."""
    if room == ROOM and payload["from"] != 0:
        raise PermissionError("the game room carries game state only: use the move action")


async def tick_forever(api: Any) -> None:
    """Broadcast the whole state to the room every TICK seconds."""
    tick = 0
    while True:
        tick += 1
        await api.chat_room.broadcast({}, ROOM, {"tick": tick, "players": players})
        await asyncio.sleep(TICK)


async def initialize(api: Any) -> None:
    await api.chat_room.add(ROOM)  # 0 when it exists already (another node made it)
    api.chat_room.add_middleware(
        ChatMiddleware(name="game", join=enter, leave=leave, on_say_receive=no_chat)
    )
    # The node cancels its background tasks when it stops.
    api.spawn(tick_forever(api))
