"""A live dashboard: the node's own figures pushed to the room ``dashboard`` every second.

    roomcast start --actions examples/dashboard/actions --public examples/dashboard/public

then open http://127.0.0.1:8080/ (the page in ``public/index.html``). Every second the
room gets a chat message from ``0`` whose ``message`` is a snapshot: connections,
local rooms, messages said and delivered (the counters ``/metrics`` shows), the event
loop's lag, uptime and the host's load average. Clients can watch but not talk there.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from roomcast import ChatMiddleware

ROOM = "dashboard"
INTERVAL = 1.0  # seconds between snapshots


def snapshot(api: Any) -> dict[str, Any]:
    """What the page shows, read from the node that runs this module."""
    stats = api.stats
    load1, load5, load15 = os.getloadavg()
    return {
        "node": api.id,
        "at": int(time.time() * 1000),
        "uptime": round(time.monotonic() - api.started_monotonic, 1),
        "connections": len(api.connections),
        "localRooms": len(api.chat_room.index),
        "messagesReceived": stats.messages_received,
        "deliveries": stats.deliveries,
        "joins": stats.joins,
        "loopLagMs": round(stats.loop_lag * 1000, 2),
        "load": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }


def read_only(connection: Any, room: str, payload: dict[str, Any]) -> None:
    """on_say_receive: only the server (a mock sender, id 0) says anything here."""
    if room == ROOM and payload["from"] != 0:
        raise PermissionError("the dashboard is read-only")


async def push_forever(api: Any) -> None:
    while True:
        await api.chat_room.broadcast({}, ROOM, snapshot(api))
        await asyncio.sleep(INTERVAL)


async def initialize(api: Any) -> None:
    await api.chat_room.add(ROOM)  # before any client can ask to join
    api.chat_room.add_middleware(ChatMiddleware(name="dashboard", on_say_receive=read_only))
    api.spawn(push_forever(api))
