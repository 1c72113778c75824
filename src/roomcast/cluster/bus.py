"""The pub/sub bus: one subscriber connection, resubscribed after every Redis outage.

Channels are subscribed on demand (a room's channel only while this node has a member in
it), so a node never receives chat traffic for rooms it does not serve. A watchdog pings
the node's own channel and rebuilds the subscriber when pings stop coming back, because a
pub/sub socket can stay open yet deaf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("roomcast.bus")

Handler = Callable[[str, bytes], Awaitable[None] | None]

# What a lost or broken Redis raises; the bus survives all of them.
REDIS_DOWN = (RedisError, OSError, asyncio.TimeoutError)


class Bus:
    """Publish to and receive from Redis channels, surviving outages.

    ``subscribe(channel, handler)`` keeps ``channel`` subscribed across reconnects; the
    handler gets ``(channel, data)``. If it returns an awaitable, the reader awaits it
    before reading on, which keeps each channel's messages in order.
    """

    def __init__(self, redis: aioredis.Redis, *, watchdog_channel: str,
                 watchdog_interval: float = 5.0, max_backoff: float = 5.0) -> None:
        self.redis = redis
        self._handlers: dict[str, Handler] = {}
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._watchdog_channel = watchdog_channel
        self._watchdog_interval = watchdog_interval
        self._max_backoff = max_backoff
        self._last_ping_seen = time.monotonic()
        self._connected = asyncio.Event()
        self._closing = False
        self.reconnects = 0
        self.on_reconnect: Callable[[], Awaitable[None]] | None = None
        self._hook_task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        """Subscribe the watchdog channel and start reading; returns once subscribed."""
        self._handlers[self._watchdog_channel] = self._on_watchdog
        try:
            await self._open()
        except REDIS_DOWN as error:  # the reader keeps retrying until Redis answers
            log.error("pub/sub unavailable at start (%s); retrying in the background", error)
        self._reader = asyncio.create_task(self._read_forever(), name="roomcast-bus-reader")
        self._watchdog = asyncio.create_task(self._watch(), name="roomcast-bus-watchdog")

    async def stop(self) -> None:
        self._closing = True
        for task in (self._reader, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._close_pubsub()

    async def publish(self, channel: str, data: bytes) -> bool:
        """Publish ``data``; returns False (and logs) when Redis is unreachable."""
        try:
            await self.redis.publish(channel, data)
            return True
        except REDIS_DOWN as error:
            log.warning("publish to %s failed: %s", channel, error)
            return False

    async def subscribe(self, channel: str, handler: Handler) -> None:
        async with self._lock:
            new = channel not in self._handlers
            self._handlers[channel] = handler
            if new and self._pubsub is not None:
                with contextlib.suppress(*REDIS_DOWN):  # resubscribed on reconnect
                    await self._pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            if self._handlers.pop(channel, None) is not None and self._pubsub is not None:
                with contextlib.suppress(*REDIS_DOWN):
                    await self._pubsub.unsubscribe(channel)

    async def sync(self, channel: str, handler: Handler, wanted: Callable[[], bool]) -> None:
        """Subscribe or unsubscribe ``channel`` so it matches ``wanted()`` read under the lock.

        Reading the wish inside the lock makes racing join/leave calls end in the state
        the last of them saw.
        """
        async with self._lock:
            want = wanted()
            have = channel in self._handlers
            if want and not have:
                self._handlers[channel] = handler
                if self._pubsub is not None:
                    with contextlib.suppress(*REDIS_DOWN):
                        await self._pubsub.subscribe(channel)
            elif have and not want:
                del self._handlers[channel]
                if self._pubsub is not None:
                    with contextlib.suppress(*REDIS_DOWN):
                        await self._pubsub.unsubscribe(channel)

    def is_subscribed(self, channel: str) -> bool:
        return channel in self._handlers

    async def _open(self) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        channels = list(self._handlers)
        if channels:
            await pubsub.subscribe(*channels)
        self._pubsub = pubsub
        self._last_ping_seen = time.monotonic()
        self._connected.set()

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._connected.clear()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _read_forever(self) -> None:
        backoff = 0.1
        while not self._closing:
            pubsub = self._pubsub
            try:
                if pubsub is None:
                    async with self._lock:
                        await self._open()
                    self.reconnects += 1
                    log.info("pub/sub reconnected; %d channels resubscribed", len(self._handlers))
                    backoff = 0.1
                    if self.on_reconnect is not None:
                        self._hook_task = asyncio.create_task(self._run_reconnect_hook())
                    continue
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                channel = message["channel"]
                if isinstance(channel, bytes):
                    channel = channel.decode()
                handler = self._handlers.get(channel)
                if handler is None:
                    continue
                try:
                    result = handler(channel, message["data"])
                    if result is not None:
                        await result
                except Exception:
                    log.exception("handler for %s failed", channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._closing:
                    return
                log.warning("pub/sub connection lost (%s); retrying in %.1fs", error, backoff)
                await self._close_pubsub()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def _run_reconnect_hook(self) -> None:
        try:
            if self.on_reconnect is not None:
                await self.on_reconnect()
        except Exception:
            log.exception("reconnect hook failed")

    def _on_watchdog(self, channel: str, data: bytes) -> None:
        self._last_ping_seen = time.monotonic()

    async def _watch(self) -> None:
        interval = self._watchdog_interval
        while not self._closing:
            await asyncio.sleep(interval)
            if self._pubsub is None:
                continue
            published = await self.publish(self._watchdog_channel, b"ping")
            silent = time.monotonic() - self._last_ping_seen
            if published and silent > 3 * interval:
                log.warning("pub/sub delivered nothing for %.1fs; rebuilding subscriber", silent)
                await self._close_pubsub()
