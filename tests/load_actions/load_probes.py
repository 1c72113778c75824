"""Actions the load tests call to look inside a node: the event loop's worst lag, HTTP
calls held open on purpose, every room's member counts, the open connections, and
rooms made in bulk."""

from __future__ import annotations

import asyncio
import gc
import time

from roomcast import Action, ActionData

#: Since the last reset, in seconds: the longest the event loop was late waking the
#: watcher ("wall", which includes time the process was not scheduled at all on a busy
#: machine) and the most CPU time the loop spent elsewhere meanwhile ("held": how long
#: other work kept the loop, whatever else the machine was doing).
LAG = {"wall": 0.0, "held": 0.0, "gc": 0.0}
TICK = 0.005
HELD = {"count": 0}
RELEASE = asyncio.Event()


def _time_collections(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _GC_START[0] = time.thread_time()
    else:
        LAG["gc"] = max(LAG["gc"], time.thread_time() - _GC_START[0])


_GC_START = [0.0]


async def _watch_loop_lag() -> None:
    while True:
        start, cpu = time.perf_counter(), time.thread_time()
        await asyncio.sleep(TICK)
        late = time.perf_counter() - start - TICK
        held = time.thread_time() - cpu
        if late > LAG["wall"]:
            LAG["wall"] = late
        if held > LAG["held"]:
            LAG["held"] = held


class LoopLag(Action):
    name = "loopLag"
    description = "The event loop's worst lag in ms since the last reset; resets it if asked."
    inputs = {"reset": {"default": ""}}

    async def run(self, data: ActionData) -> None:
        data.response["wallMs"] = round(LAG["wall"] * 1000, 2)
        data.response["heldMs"] = round(LAG["held"] * 1000, 2)
        data.response["gcMs"] = round(LAG["gc"] * 1000, 2)
        if data.params["reset"]:
            LAG["wall"] = LAG["held"] = LAG["gc"] = 0.0


class Hold(Action):
    name = "hold"
    description = "Waits (at most 20 s) until the release action runs."

    async def run(self, data: ActionData) -> None:
        HELD["count"] += 1
        try:
            await asyncio.wait_for(RELEASE.wait(), 20)
        finally:
            HELD["count"] -= 1
        data.response["held"] = True


class Held(Action):
    name = "held"
    description = "How many hold actions are waiting."

    async def run(self, data: ActionData) -> None:
        data.response["held"] = HELD["count"]


class Release(Action):
    name = "release"
    description = "Lets every hold action finish."

    async def run(self, data: ActionData) -> None:
        RELEASE.set()
        data.response["released"] = HELD["count"]


class RoomCounts(Action):
    name = "roomCounts"
    description = "Every room's member count in the store and in this node's room index."

    async def run(self, data: ActionData) -> None:
        chat = data.api.chat_room
        counts = {}
        for room in await chat.list():
            status = await chat.room_status(room)
            counts[room] = {
                "stored": status["membersCount"],
                "indexed": len(chat.index.members(room)),
            }
        data.response["rooms"] = counts


class OpenConnections(Action):
    name = "openConnections"
    description = "The details of every connection this node has open, with its type."

    async def run(self, data: ActionData) -> None:
        data.response["connections"] = [
            {**connection.details(), "type": connection.type} for connection in data.api.connections
        ]


class CreateRooms(Action):
    name = "createRooms"
    description = "Creates rooms prefix-0 .. prefix-(count-1) through the chat-room API."
    inputs = {"prefix": {"required": True}, "count": {"required": True}}

    async def run(self, data: ActionData) -> None:
        prefix, count = str(data.params["prefix"]), int(data.params["count"])
        created = 0
        for number in range(count):
            created += await data.api.chat_room.add(f"{prefix}-{number}")
        data.response["created"] = created


async def initialize(api) -> None:  # type: ignore[no-untyped-def]
    gc.callbacks.append(_time_collections)
    api.spawn(_watch_loop_lag())
