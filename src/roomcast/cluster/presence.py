"""Crash-safe presence: heartbeats for this node, reaping of nodes that died uncleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from roomcast.cluster.bus import REDIS_DOWN
from roomcast.cluster.store import Store

log = logging.getLogger("roomcast.presence")


class Presence:
    """Keeps this node's heartbeat alive and removes dead nodes' members from every room.

    A node's memberships disappear at most ``ttl`` (heartbeat expiry) plus one check
    interval after it stops beating.
    """

    def __init__(self, store: Store, node_id: str, ttl: float) -> None:
        self._store = store
        self.node_id = node_id
        self.ttl = ttl
        self.interval = max(0.2, ttl / 5)
        self._task: asyncio.Task[None] | None = None
        self.on_lapse: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        # A node restarting under the same id must not inherit its old ghosts.
        with contextlib.suppress(*REDIS_DOWN):
            removed = await self._store.reap_node(self.node_id)
            if removed:
                log.info("removed %d stale memberships of a previous run of %s",
                         removed, self.node_id)
            await self._store.heartbeat(self.node_id, self.ttl)
        self._task = asyncio.create_task(self._run(), name="roomcast-presence")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(*REDIS_DOWN):
            await self._store.reap_node(self.node_id)

    async def beat(self) -> None:
        await self._store.heartbeat(self.node_id, self.ttl)

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                if not await self._store.heartbeat(self.node_id, self.ttl):
                    log.warning("heartbeat had lapsed (Redis restarted or node stalled); "
                                "writing this node's memberships again")
                    if self.on_lapse is not None:
                        await self.on_lapse()
                for node in await self._store.dead_nodes():
                    removed = await self._store.reap_node(node)
                    log.warning("node %s stopped beating; removed %d of its memberships",
                                node, removed)
                if failing:
                    log.info("presence: Redis reachable again")
                failing = False
            except REDIS_DOWN as error:
                if not failing:
                    log.error("presence: Redis unreachable (%s); will keep retrying", error)
                failing = True
