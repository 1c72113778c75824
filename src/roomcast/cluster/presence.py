"""Crash-safe presence: heartbeats for this node, reaping of nodes that died uncleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from roomcast.cluster.errors import REDIS_DOWN
from roomcast.cluster.store import Store

log = logging.getLogger("roomcast.presence")


class Presence:
    """Keeps this node's heartbeat alive and removes dead nodes' members from every room.

    Every ``interval`` (``ttl / 5``) the node rewrites its heartbeat key, which expires
    ``ttl - interval`` after being written, and reaps every node whose key has expired. So
    a node that stops beating loses its memberships at most ``ttl`` after its last beat,
    and a live node may miss three beats in a row before it is taken for dead.

    ``on_reaped(entries)`` is told the ``(connection id, room)`` memberships this node
    reaped (read before they were deleted), so the rooms can be told who left.

    ``on_resync`` writes this node's state to Redis again. It runs here, one at a time,
    when the heartbeat had lapsed (Redis lost its data, or others reaped this node after
    a stall), after Redis was unreachable, and when :meth:`request_resync` asks for it.
    """

    def __init__(self, store: Store, node_id: str, ttl: float) -> None:
        self._store = store
        self.node_id = node_id
        self.ttl = ttl
        self.interval = ttl / 5
        self.expiry = ttl - self.interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._resync_wanted = False
        self._closing = False
        self.on_resync: Callable[[], Awaitable[None]] | None = None
        self.on_reaped: Callable[[set[tuple[str, str]]], Awaitable[None]] | None = None

    async def start(self) -> None:
        # A node restarting under the same id must not inherit its old ghosts.
        try:
            if await self._store.is_alive(self.node_id):
                log.warning(
                    "node id %s is still marked alive: a previous run that died "
                    "moments ago, or another node with the same id (ids must be "
                    "unique)",
                    self.node_id,
                )
            removed = await self._store.reap_node_entries(self.node_id)
            if removed:
                log.info(
                    "removed %d stale memberships of a previous run of %s",
                    len(removed),
                    self.node_id,
                )
                await self._reaped(removed)
            await self.beat()
        except REDIS_DOWN as error:
            log.error("presence: Redis unreachable at start (%s); will keep retrying", error)
            self._resync_wanted = True
        self._task = asyncio.create_task(self._run(), name="roomcast-presence")

    async def stop(self) -> None:
        """Stop beating and remove this node's memberships and heartbeat (a clean leave)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(*REDIS_DOWN):
            await self._store.reap_node(self.node_id)

    async def beat(self) -> bool:
        """Write the heartbeat now; False when it had lapsed."""
        return await self._store.heartbeat(self.node_id, self.expiry)

    def request_resync(self) -> None:
        """Have ``on_resync`` run soon (a write to Redis failed, or pub/sub reconnected)."""
        self._resync_wanted = True
        self._wake.set()

    async def _run(self) -> None:
        failing = False
        while not self._closing:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the wake-up does, and then stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                if not await self.beat():
                    log.warning(
                        "heartbeat had lapsed (Redis lost its data, or this node "
                        "stalled and was reaped); writing this node's members again"
                    )
                    self._resync_wanted = True
                if failing:
                    log.info("presence: Redis reachable again")
                    self._resync_wanted = True
                failing = False
                if self._resync_wanted:
                    self._resync_wanted = False
                    await self._resync()
                for node in await self._store.dead_nodes():
                    removed = await self._store.reap_node_entries(node)
                    if removed is None:
                        continue  # another node is reaping it
                    if removed:
                        log.warning(
                            "node %s stopped beating; removed %d of its memberships",
                            node,
                            len(removed),
                        )
                        await self._reaped(removed)
                    else:
                        log.info("node %s stopped beating", node)
            except REDIS_DOWN as error:
                if not failing:
                    log.error("presence: Redis unreachable (%s); will keep retrying", error)
                failing = True
            except Exception:
                log.exception("presence check failed; retrying")

    async def _reaped(self, entries: set[tuple[str, str]]) -> None:
        if self.on_reaped is None:
            return
        try:
            await self.on_reaped(entries)
        except Exception:  # the memberships are gone either way; only the news is lost
            log.exception("telling the rooms about %d reaped memberships failed", len(entries))

    async def _resync(self) -> None:
        if self.on_resync is None:
            return
        try:
            await self.on_resync()
        except BaseException:
            self._resync_wanted = True
            raise
