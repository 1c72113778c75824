"""Sharded pub/sub on a Redis Cluster: one subscriber connection per shard, placed by slot.

Every channel is a shard channel (``SSUBSCRIBE``/``SPUBLISH``): a message goes to the one
master owning its channel's hash slot (and its replicas), never to the whole cluster. A
room's channel shares its keys' slot. The RPC, reply and watchdog channels are shard
channels too, rather than classic ones: a classic ``PUBLISH`` is forwarded to every node
of the cluster, and a classic subscriber would be one more connection whose node can fail
over, handled apart from the rest. As shard channels they are placed, watched and moved
like rooms' (a node's reply channel hashes by its node id, the RPC channel by its name).

This node keeps one subscriber per master that owns a slot of a channel it listens to,
found from the cluster's slot map (``CLUSTER SLOTS``). When a subscriber breaks (its
master died), Redis moves its slots away (it says so with an unsolicited
``sunsubscribe``, or answers ``MOVED``), or its watchdog pings stop coming back, the
slot map is read again and that shard's channels are subscribed on their owners now:
after a failover, on the replica that took over.

As in :class:`~roomcast.cluster.bus.Bus`, only a shard's reader task closes its
subscriber; anyone may ask for a rebuild.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from roomcast.cluster.bus import Handler
from roomcast.cluster.errors import REDIS_DOWN

log = logging.getLogger("roomcast.bus")

#: How many salts are tried to find a watchdog channel on a given shard.
_SALTS = 1 << 16


class NotAMaster(RedisError):
    """The slot map named a node that is a replica by now (the map was read too early)."""


@dataclass(eq=False)
class _Shard:
    """The subscriber on one master, for the channels whose slots it serves."""

    name: str
    host: str
    port: int
    client: aioredis.Redis
    channels: set[str] = field(default_factory=set)
    pubsub: aioredis.client.PubSub | None = None
    reader: asyncio.Task[None] | None = None
    #: This shard's watchdog channel, and the unanswered ping on it (payload, sent at).
    probe: str | None = None
    ping: tuple[bytes, float] | None = None
    rebuild_reason: str | None = None
    #: Its channels may belong elsewhere now: read the slot map before opening again.
    stale: bool = False
    #: Opening it restores lost subscriptions (after an outage, a failover, a rebuild).
    resumed: bool = False
    lost_at: float | None = None
    #: Our own SUNSUBSCRIBEs whose confirmation has not been read yet, by channel.
    leaving: Counter[str] = field(default_factory=Counter)
    retired: bool = False


class ShardedBus:
    """:class:`~roomcast.cluster.bus.Bus` for a Redis Cluster: the same interface.

    ``connect_node(host, port)`` makes a client of one master (for its subscriber);
    ``watchdog_channel(salt)`` names this node's watchdog channels, one of which lands on
    each shard for some salt.
    """

    def __init__(
        self,
        redis: RedisCluster,
        *,
        connect_node: Callable[[str, int], aioredis.Redis],
        watchdog_channel: Callable[[int], str],
        watchdog_interval: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.redis = redis
        self._connect_node = connect_node
        self._watchdog_channel = watchdog_channel
        self._watchdog_interval = watchdog_interval
        self._poll = min(1.0, watchdog_interval)
        self._max_backoff = max_backoff
        self._handlers: dict[str, Handler] = {}
        self._shards: dict[str, _Shard] = {}
        self._where: dict[str, _Shard] = {}  # channel -> the shard subscribed to it
        self._unplaced: set[str] = set()  # channels whose owner is not known yet
        # The slot map: sorted (first slot, last slot, master host, master port).
        self._ranges: list[tuple[int, int, str, int]] = []
        self._starts: list[int] = []
        self._refreshing: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._unlocked = asyncio.Event()
        self._unlocked.set()
        self._placer: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._pings = 0
        self._closing = False
        #: How many times a shard's subscriber was opened again (after an outage, a
        #: failover or a rebuild).
        self.reconnects = 0
        #: Called (synchronously) each time a subscriber has been opened again.
        self.on_reconnect: Callable[[], None] | None = None

    @property
    def connected(self) -> bool:
        """True when every channel is subscribed on a live subscriber."""
        if self._unplaced or not self._shards:
            return False
        return all(shard.pubsub is not None for shard in self._shards.values())

    async def start(self) -> None:
        """Read the cluster's slot map and start the watchdog; channels come later."""
        try:
            await self._refresh_slots()
        except REDIS_DOWN as error:  # channels wait in _unplaced until it answers
            log.error("pub/sub unavailable at start (%s); retrying in the background", error)
        self._watchdog = asyncio.create_task(self._watch(), name="roomcast-bus-watchdog")

    async def stop(self) -> None:
        self._closing = True
        for task in (self._placer, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for shard in list(self._shards.values()):
            await self._retire(shard)

    async def publish(self, channel: str, data: bytes) -> bool:
        """``SPUBLISH`` ``data``; returns False (and logs) when Redis is unreachable."""
        try:
            await self.redis.spublish(channel, data)
            return True
        except REDIS_DOWN as error:
            log.warning("publish to %s failed: %s", channel, error)
            return False

    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Keep ``channel`` subscribed (across failovers) with ``handler``."""
        async with self._locked():
            new = channel not in self._handlers
            self._handlers[channel] = handler
            if new:
                await self._place([channel])

    def settled(self, channel: str, wanted: bool) -> bool:
        """True when ``channel`` is subscribed exactly if ``wanted`` and no (un)subscribe is
        in flight: then :meth:`sync` with that wish would do nothing, and need not be awaited.
        """
        return wanted == (channel in self._handlers) and not self._lock.locked()

    async def sync(self, channel: str, handler: Handler, wanted: Callable[[], bool]) -> None:
        """Subscribe or unsubscribe ``channel`` so it matches ``wanted()`` read under the lock."""
        for _ in range(3):
            if wanted() != (channel in self._handlers):
                break
            if not self._lock.locked():
                return
            await self._unlocked.wait()
        async with self._locked():
            want = wanted()
            have = channel in self._handlers
            if want and not have:
                self._handlers[channel] = handler
                await self._place([channel])
            elif have and not want:
                del self._handlers[channel]
                await self._unplace(channel)

    async def release(self, channels: list[str], wanted: Callable[[str], bool]) -> None:
        """Unsubscribe each of ``channels`` that ``wanted(channel)`` no longer wants (a
        connection leaving many rooms at once)."""
        if not any(channel in self._handlers for channel in channels):
            return
        async with self._locked():
            for channel in channels:
                if channel in self._handlers and not wanted(channel):
                    del self._handlers[channel]
                    await self._unplace(channel)

    async def confirmed(self, channel: str) -> None:
        """Return once ``channel`` is subscribed on its shard's live subscriber (polled:
        the caller bounds the wait)."""
        while True:
            shard = self._where.get(channel)
            if shard is not None and shard.pubsub is not None and channel not in self._unplaced:
                return
            await asyncio.sleep(0.01)

    def rebuild(self, reason: str) -> None:
        """Have every shard's subscriber replaced, its channels placed by a fresh slot map."""
        for shard in self._shards.values():
            if shard.rebuild_reason is None:
                shard.rebuild_reason = reason

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        async with self._lock:
            self._unlocked.clear()
            try:
                yield
            finally:
                self._unlocked.set()

    # the slot map ------------------------------------------------------------------------

    async def _refresh_slots(self) -> None:
        """Read the slot map again; concurrent callers share one ``CLUSTER SLOTS``."""
        pending = self._refreshing
        if pending is None:
            pending = self._refreshing = asyncio.ensure_future(self._read_slots())
            pending.add_done_callback(self._refreshed)
        await asyncio.shield(pending)

    def _refreshed(self, future: asyncio.Future[None]) -> None:
        self._refreshing = None
        if not future.cancelled():
            future.exception()  # retrieved here; every waiter re-raises it

    async def _read_slots(self) -> None:
        slots: Any = await self.redis.cluster_slots()
        ranges = sorted(
            (int(first), int(last), str(owner["primary"][0]), int(owner["primary"][1]))
            for (first, last), owner in slots.items()
        )
        self._ranges = ranges
        self._starts = [first for first, _, _, _ in ranges]

    def _owner(self, channel: str) -> tuple[str, int] | None:
        """The master serving ``channel``'s slot in the slot map; None when none does."""
        slot = self.redis.keyslot(channel)
        index = bisect.bisect_right(self._starts, slot) - 1
        if index < 0:
            return None
        first, last, host, port = self._ranges[index]
        return (host, port) if first <= slot <= last else None

    def _probe_for(self, shard: _Shard) -> str | None:
        """A watchdog channel on ``shard``'s slots (the first salt that lands there)."""
        for salt in range(_SALTS):
            channel = self._watchdog_channel(salt)
            if self._owner(channel) == (shard.host, shard.port):
                return channel
        return None

    def _by_slot(self, channels: Iterable[str]) -> list[list[str]]:
        """``channels`` grouped by hash slot: one ``SSUBSCRIBE`` may not span two."""
        groups: dict[int, list[str]] = {}
        for channel in channels:
            groups.setdefault(self.redis.keyslot(channel), []).append(channel)
        return list(groups.values())

    # placing channels (all under the lock) -----------------------------------------------

    async def _place(
        self, channels: Iterable[str], resumed: bool = False, lost_at: float | None = None
    ) -> None:
        """Subscribe ``channels`` on the shards that own them now (opening new shards).

        ``resumed``: they were lost (since ``lost_at``), so a new shard opened for them
        counts as a reconnection.
        """
        by_owner: dict[tuple[str, int], list[str]] = {}
        for channel in channels:
            owner = self._owner(channel)
            if owner is None:
                self._unplaced.add(channel)
            else:
                by_owner.setdefault(owner, []).append(channel)
        for (host, port), group in by_owner.items():
            name = f"{host}:{port}"
            shard = self._shards.get(name)
            if shard is None:
                client = self._connect_node(host, port)
                shard = _Shard(name, host, port, client, resumed=resumed, lost_at=lost_at)
                self._shards[name] = shard
            for channel in group:
                self._where[channel] = shard
            shard.channels.update(group)
            if shard.reader is None:  # new: opened here, so the caller returns subscribed
                try:
                    await self._open(shard)
                except REDIS_DOWN as error:
                    log.warning("subscriber on %s not opened (%s); retrying", name, error)
                    shard.stale = shard.resumed = True
                shard.reader = asyncio.create_task(
                    self._read_forever(shard), name=f"roomcast-bus-reader-{name}"
                )
            elif shard.pubsub is not None:
                await self._ssubscribe(shard, group)
        if self._unplaced and self._placer is None and not self._closing:
            self._placer = asyncio.create_task(self._place_later(), name="roomcast-bus-placer")

    async def _unplace(self, channel: str) -> None:
        self._unplaced.discard(channel)
        shard = self._where.pop(channel, None)
        if shard is None:
            return
        shard.channels.discard(channel)
        if not shard.channels:
            await self._retire(shard)
            return
        pubsub = shard.pubsub
        if pubsub is None:
            return  # it subscribes only its channels when it opens again
        shard.leaving[channel] += 1
        try:
            await pubsub.sunsubscribe(channel)
        except REDIS_DOWN as error:
            self._rebuild_shard(shard, f"sunsubscribe {channel} failed ({error})")

    async def _ssubscribe(self, shard: _Shard, channels: Iterable[str]) -> None:
        """Subscribe on ``shard``'s live subscriber; if that fails, have it rebuilt.

        A failed ``SSUBSCRIBE`` would leave this node deaf to the channel for good; a
        rebuilt subscriber subscribes exactly its shard's channels.
        """
        pubsub = shard.pubsub
        assert pubsub is not None
        try:
            for group in self._by_slot(channels):
                await pubsub.ssubscribe(*group)
        except REDIS_DOWN as error:
            self._rebuild_shard(shard, f"ssubscribe on {shard.name} failed ({error})")

    async def _open(self, shard: _Shard) -> None:
        """Install a new subscriber on ``shard`` for its channels and its watchdog channel.

        A replica would accept the subscriptions too (and hear its master's messages), but
        the slot map that sent us there was stale: refused, so the map is read again.
        """
        # The connection asked goes back to the pool, where the subscriber takes it.
        role: Any = await shard.client.role()
        if role[0] not in (b"master", "master"):
            raise NotAMaster(f"{shard.name} is no longer a master")
        pubsub = shard.client.pubsub()
        probe = self._probe_for(shard)
        try:
            for group in self._by_slot([*shard.channels, *([probe] if probe else [])]):
                await pubsub.ssubscribe(*group)
        except BaseException:
            await _close_quietly(pubsub)
            raise
        shard.pubsub, shard.probe, shard.ping = pubsub, probe, None
        shard.leaving.clear()
        if shard.resumed:
            shard.resumed = False
            self.reconnects += 1
            down = f" after {time.monotonic() - shard.lost_at:.1f}s" if shard.lost_at else ""
            log.info(
                "pub/sub reconnected%s; %d channels resubscribed on %s",
                down,
                len(shard.channels),
                shard.name,
            )
            if self.on_reconnect is not None:
                self.on_reconnect()
        shard.lost_at = None

    async def _retire(self, shard: _Shard) -> None:
        """Forget ``shard`` and close its subscriber (its reader ends first)."""
        shard.retired = True
        if self._shards.get(shard.name) is shard:
            del self._shards[shard.name]
        reader = shard.reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        pubsub, shard.pubsub = shard.pubsub, None
        if pubsub is not None:
            await _close_quietly(pubsub)
        with contextlib.suppress(Exception):
            await shard.client.aclose()

    async def _relocate(self, shard: _Shard) -> None:
        """Move ``shard``'s channels that the slot map gives to other masters over there."""
        moved = [c for c in shard.channels if self._owner(c) != (shard.host, shard.port)]
        if not moved:
            return
        shard.channels.difference_update(moved)
        for channel in moved:
            self._where.pop(channel, None)
        log.info("%d channels moved from %s to their new owners", len(moved), shard.name)
        await self._place(moved, resumed=True, lost_at=shard.lost_at)

    async def _place_later(self) -> None:
        """Place the channels whose slot had no known owner once the slot map has one."""
        backoff = 0.1
        try:
            while self._unplaced and not self._closing:
                try:
                    await self._refresh_slots()
                    async with self._locked():
                        waiting, self._unplaced = self._unplaced, set()
                        await self._place(waiting, resumed=True)
                except REDIS_DOWN as error:
                    log.debug("slot map unavailable (%s); next try in %.1fs", error, backoff)
                if self._unplaced:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
        finally:
            self._placer = None

    def _rebuild_shard(self, shard: _Shard, reason: str) -> None:
        if shard.rebuild_reason is None:
            shard.rebuild_reason = reason

    # reading -----------------------------------------------------------------------------

    async def _read_forever(self, shard: _Shard) -> None:
        backoff = 0.1
        while not self._closing and not shard.retired:
            try:
                if shard.rebuild_reason is not None and shard.pubsub is not None:
                    log.warning("%s; rebuilding the subscriber", shard.rebuild_reason)
                    await self._lose(shard)
                shard.rebuild_reason = None
                if shard.pubsub is None:
                    await self._reopen(shard)
                    backoff = 0.1
                    continue
                message = await shard.pubsub.get_message(timeout=self._poll)
                if message is not None:
                    await self._on_message(shard, message)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._closing or shard.retired:
                    return
                if shard.lost_at is None:
                    log.error(
                        "Redis pub/sub connection to %s lost (%s); local delivery goes on, "
                        "reconnecting with backoff",
                        shard.name,
                        error,
                    )
                else:
                    log.debug("pub/sub still unavailable (%s); next try in %.1fs", error, backoff)
                await self._lose(shard)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def _lose(self, shard: _Shard) -> None:
        """Close ``shard``'s subscriber; its channels are placed again before it reopens."""
        if shard.lost_at is None:
            shard.lost_at = time.monotonic()
        shard.stale = shard.resumed = True
        pubsub, shard.pubsub = shard.pubsub, None
        if pubsub is not None:
            await _close_quietly(pubsub)

    async def _reopen(self, shard: _Shard) -> None:
        if shard.stale:  # where do its channels live now?
            await self._refresh_slots()
        async with self._locked():
            if shard.retired:
                return
            if shard.stale:
                await self._relocate(shard)
                shard.stale = False
            if not shard.channels:
                await self._retire(shard)
                return
            await self._open(shard)

    async def _on_message(self, shard: _Shard, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "smessage":
            channel = message["channel"].decode()
            if channel == shard.probe:
                if shard.ping is not None and shard.ping[0] == message["data"]:
                    shard.ping = None
                return
            handler = self._handlers.get(channel)
            if handler is None:
                return
            try:
                result = handler(channel, message["data"])
                if result is not None:
                    await result
            except Exception:
                log.exception("handler for %s failed", channel)
        elif kind == "sunsubscribe":
            channel = message["channel"].decode()
            if shard.leaving[channel] > 0:
                shard.leaving[channel] -= 1  # the answer to ours
            elif channel in shard.channels or channel == shard.probe:
                # Unasked: Redis moved the channel's slot to another master.
                self._rebuild_shard(shard, f"{shard.name} no longer serves {channel}")

    # the watchdog ------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Ping every shard's subscriber on its own watchdog channel; have a shard rebuilt
        when its ping is not heard back within three intervals although it was published.

        When this loop itself ran late (the process was stalled), outstanding pings get a
        fresh window instead of a verdict.
        """
        interval = self._watchdog_interval
        last_tick = time.monotonic()
        while not self._closing:
            await asyncio.sleep(interval)
            now = time.monotonic()
            stalled, last_tick = now - last_tick > 2 * interval, now
            sends = []
            for shard in list(self._shards.values()):
                if shard.pubsub is None or shard.rebuild_reason is not None or not shard.probe:
                    shard.ping = None  # it is reconnecting
                    continue
                if shard.ping is not None:
                    payload, sent_at = shard.ping
                    if stalled:
                        shard.ping = (payload, now)
                    elif now - sent_at > 3 * interval:
                        shard.ping = None
                        self._rebuild_shard(
                            shard,
                            f"pub/sub on {shard.name} delivered nothing for "
                            f"{now - sent_at:.1f}s although publishing works",
                        )
                    continue
                self._pings += 1
                shard.ping = (b"ping %d" % self._pings, now)
                sends.append(self._send_ping(shard, shard.probe, shard.ping))
            if sends:
                await asyncio.gather(*sends)

    async def _send_ping(self, shard: _Shard, channel: str, ping: tuple[bytes, float]) -> None:
        if not await self.publish(channel, ping[0]) and shard.ping is ping:
            shard.ping = None


async def _close_quietly(pubsub: aioredis.client.PubSub) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
