"""The pub/sub bus: one subscriber connection, resubscribed after every Redis outage.

Channels are subscribed on demand (a room's channel only while this node has a member in
it), so a node never receives chat traffic for rooms it does not serve. A channel nobody
wants any more stays subscribed for ``UNSUBSCRIBE_AFTER`` seconds, and the channels that
stayed unwanted that long go in one ``UNSUBSCRIBE``: a room that empties and fills again
(members coming and going) costs no SUBSCRIBE/UNSUBSCRIBE pair each time. What arrives on
such a channel meanwhile finds no member to deliver to. The other way round, the channels
rooms start wanting within one loop tick go out in one ``SUBSCRIBE``. A watchdog pings
the node's own channel and rebuilds the subscriber when pings stop coming back, because a
pub/sub socket can stay open yet deaf.

Only the reader task opens and closes the subscriber: closing a redis-py ``PubSub`` while
another task reads from it hands a busy connection back to the pool. Everyone else asks
for a rebuild, which the reader performs within one poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis

from roomcast.cluster.errors import REDIS_DOWN
from roomcast.cluster.store import GroupCommit

log = logging.getLogger("roomcast.bus")

Handler = Callable[[str, bytes], Awaitable[None] | None]

#: Seconds the reader may work through a backlog before it lets the event loop run.
READ_SLICE = 0.005
#: Seconds an unwanted channel stays subscribed before it is unsubscribed (0: at once).
UNSUBSCRIBE_AFTER = 2.0


class Bus:
    """Publish to and receive from Redis channels, surviving outages.

    ``subscribe(channel, handler)`` keeps ``channel`` subscribed across reconnects; the
    handler gets ``(channel, data)``. If it returns an awaitable, the reader awaits it
    before reading on, which keeps each channel's messages in order.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        watchdog_channel: str,
        watchdog_interval: float = 5.0,
        max_backoff: float = 5.0,
        unsubscribe_after: float = UNSUBSCRIBE_AFTER,
    ) -> None:
        self.redis = redis
        # Publishes of one loop tick go out as one pipelined write, in the order said.
        self._publisher = GroupCommit(redis)
        self._handlers: dict[str, Handler] = {}
        # Subscribed channels that were unwanted at their last sync: channel -> (the wish to
        # read again before unsubscribing, since when), oldest first.
        self._unwanted: dict[str, tuple[Callable[[], bool], float]] = {}
        self._unsubscribe_after = unsubscribe_after
        self._unsubscriber: asyncio.Task[None] | None = None
        # Channels given a handler whose SUBSCRIBE goes out in the next batch, the future
        # their callers wait on, and the task that sends it.
        self._subscribing: list[str] = []
        self._subscribe_batch: asyncio.Future[None] | None = None
        self._subscriber: asyncio.Task[None] | None = None
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._unlocked = asyncio.Event()
        self._unlocked.set()
        self._watchdog_channel = watchdog_channel
        self._watchdog_interval = watchdog_interval
        self._poll = min(1.0, watchdog_interval)
        self._max_backoff = max_backoff
        # The unanswered watchdog ping: its payload and when it was sent.
        self._ping: tuple[bytes, float] | None = None
        # When the reader last got a message off the subscriber (monotonic seconds).
        self._heard_at = 0.0
        self._pings = 0
        self._rebuild_reason: str | None = None
        self._closing = False
        # Subscriptions Redis has confirmed, and per channel how many subscribes were
        # sent and not confirmed yet: a channel is confirmed once its last one is.
        self._confirmed: set[str] = set()
        self._unconfirmed: dict[str, int] = {}
        self._confirmation_waiters: dict[str, list[asyncio.Future[None]]] = {}
        #: How many times the subscriber was opened again (after an outage or a rebuild).
        self.reconnects = 0
        #: Called (synchronously) each time the subscriber has been opened again.
        self.on_reconnect: Callable[[], None] | None = None

    @property
    def connected(self) -> bool:
        return self._pubsub is not None

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
        for task in (self._reader, self._watchdog, self._unsubscriber, self._subscriber):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await _close_quietly(pubsub)
        await self._publisher.close()

    async def publish(self, channel: str, data: bytes) -> bool:
        """Publish ``data``; returns False (and logs) when Redis is unreachable.

        The publishes of one loop tick (and of the time the previous batch is in flight)
        share one write over one connection, so they leave in the order they were made.
        """
        try:
            await self._publisher.submit((("PUBLISH", channel, data),))
            return True
        except REDIS_DOWN as error:
            log.warning("publish to %s failed: %s", channel, error)
            return False

    async def subscribe(self, channel: str, handler: Handler) -> None:
        """Keep ``channel`` subscribed (across reconnects) with ``handler``."""
        async with self._locked():
            self._unwanted.pop(channel, None)
            new = channel not in self._handlers
            self._handlers[channel] = handler
            if new:
                await self._send("subscribe", channel)

    async def confirmed(self, channel: str) -> None:
        """Return once Redis has confirmed this node's subscription to ``channel``.

        From then on every message published on ``channel`` reaches its handler (a
        subscribe is only sent by :meth:`subscribe`/:meth:`sync`; Redis applies it a
        little later). Waits across reconnects; the caller bounds the wait.
        """
        if channel in self._confirmed:
            return
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._confirmation_waiters.setdefault(channel, [])
        waiters.append(waiter)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)
            if not waiters:
                self._confirmation_waiters.pop(channel, None)

    def _on_confirmation(self, kind: str, channel: str) -> None:
        if kind == "unsubscribe":
            return
        left = self._unconfirmed.get(channel, 1) - 1
        if left > 0:
            self._unconfirmed[channel] = left
            return
        self._unconfirmed.pop(channel, None)
        if channel not in self._handlers:
            return  # unsubscribed since
        self._confirmed.add(channel)
        for waiter in self._confirmation_waiters.get(channel, ()):
            if not waiter.done():
                waiter.set_result(None)

    def settled(self, channel: str, wanted: bool) -> bool:
        """True when ``channel`` is subscribed exactly if ``wanted`` and no (un)subscribe is
        in flight: then :meth:`sync` with that wish would do nothing, and need not be awaited.
        """
        return wanted == (channel in self._handlers) and not self._lock.locked()

    def subscribed(self) -> list[str]:
        """The channels this node is subscribed to (or subscribing), its own included."""
        return list(self._handlers)

    async def sync(self, channel: str, handler: Handler, wanted: Callable[[], bool]) -> None:
        """Subscribe or unsubscribe ``channel`` so it matches ``wanted()`` read under the lock.

        Reading the wish inside the lock makes racing join/leave calls end in the state
        the last of them saw.
        """
        for _ in range(3):
            if wanted() != (channel in self._handlers):
                break
            if not self._lock.locked():
                return  # nothing to change and nobody changing it: the common case
            # A change is in flight; wait for it with everyone else (woken together,
            # not one per loop tick as lock waiters are), then look again.
            await self._unlocked.wait()
        async with self._locked():
            want = wanted()
            have = channel in self._handlers
            if have or not want:
                if have and not want:
                    await self._drop([channel], [wanted])
                return
            self._handlers[channel] = handler
            batch = self._subscribe_soon(channel)
        # Shielded: the batch is shared, and one caller giving up must not cancel it.
        await asyncio.shield(batch)

    def _subscribe_soon(self, channel: str) -> asyncio.Future[None]:
        """Have ``channel`` (just given its handler) subscribed with the next batch: every
        channel queued before the batch's task runs goes in one ``SUBSCRIBE``. The future
        is done once that command is written."""
        self._subscribing.append(channel)
        batch = self._subscribe_batch
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._subscribe_batch = loop.create_future()
            self._subscriber = loop.create_task(
                self._send_subscribes(batch), name="roomcast-bus-subscriber"
            )
        return batch

    async def _send_subscribes(self, batch: asyncio.Future[None]) -> None:
        try:
            async with self._locked():
                channels, self._subscribing = self._subscribing, []
                self._subscribe_batch = None  # what is queued from now on: the next batch
                # a channel unsubscribed meanwhile has no handler any more
                wanted = [c for c in dict.fromkeys(channels) if c in self._handlers]
                if wanted:
                    await self._send("subscribe", *wanted)
        except Exception as error:  # every caller of the batch gets it
            batch.set_exception(error)
            batch.add_done_callback(_retrieve)
        except BaseException:
            batch.cancel()
            raise
        else:
            batch.set_result(None)
        finally:
            if self._subscriber is asyncio.current_task():
                self._subscriber = None

    async def release(self, channels: list[str], wanted: Callable[[str], bool]) -> None:
        """Unsubscribe each of ``channels`` that ``wanted(channel)`` no longer wants, all
        in one command (a connection leaving many rooms at once)."""
        if not any(channel in self._handlers for channel in channels):
            return
        async with self._locked():
            gone = [c for c in channels if c in self._handlers and not wanted(c)]
            if gone:
                await self._drop(gone, [functools.partial(wanted, c) for c in gone])

    async def _drop(self, channels: list[str], wishes: list[Callable[[], bool]]) -> None:
        """Unsubscribe ``channels`` (subscribed, unwanted), at once or after a while; under
        the lock."""
        if self._unsubscribe_after <= 0 or self._closing:
            for channel in channels:
                del self._handlers[channel]
            await self._send("unsubscribe", *channels)
            return
        now = time.monotonic()
        for channel, wish in zip(channels, wishes, strict=True):
            self._unwanted.pop(channel, None)  # to the end: the newest
            self._unwanted[channel] = (wish, now)
        if self._unsubscriber is None:
            self._unsubscriber = asyncio.create_task(
                self._unsubscribe_later(), name="roomcast-bus-unsubscriber"
            )

    async def _unsubscribe_later(self) -> None:
        """Unsubscribe, in one command per round, the channels still unwanted
        ``unsubscribe_after`` seconds after they became so; until none is left."""
        after = self._unsubscribe_after
        try:
            while self._unwanted:
                _, since = next(iter(self._unwanted.values()))
                await asyncio.sleep(max(0.0, since + after - time.monotonic()) + after / 4)
                async with self._locked():
                    due = time.monotonic() - after
                    ripe = [c for c, (_, at) in self._unwanted.items() if at <= due]
                    gone = []
                    for channel in ripe:
                        wish, _ = self._unwanted.pop(channel)
                        if channel in self._handlers and not wish():
                            del self._handlers[channel]
                            gone.append(channel)
                    if gone:
                        await self._send("unsubscribe", *gone)
        finally:
            self._unsubscriber = None

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        async with self._lock:
            self._unlocked.clear()
            try:
                yield
            finally:
                self._unlocked.set()

    def rebuild(self, reason: str) -> None:
        """Have the reader replace the subscriber with a new one subscribed to every channel."""
        if self._rebuild_reason is None:
            self._rebuild_reason = reason

    async def _send(self, command: str, *channels: str) -> None:
        """(Un)subscribe on the live subscriber; if that fails, have it rebuilt.

        redis-py may reconnect a subscriber by itself and replays only the subscriptions
        that succeeded, so a failed one would leave this node deaf (or listening to a room
        it left) for good. A rebuilt subscriber subscribes exactly ``self._handlers``.
        """
        pubsub = self._pubsub
        self._confirmed.difference_update(channels)
        if pubsub is None:
            return  # the reader subscribes everything when it reconnects
        if command == "subscribe":
            for channel in channels:
                self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
        try:
            await getattr(pubsub, command)(*channels)
        except REDIS_DOWN as error:
            named = channels[0] if len(channels) == 1 else f"{len(channels)} channels"
            self.rebuild(f"{command} {named} failed ({error})")

    async def _open(self) -> None:
        """Install a new subscriber, subscribed to every channel that has a handler.

        Under the lock, so no channel added meanwhile is left out.
        """
        async with self._locked():
            # Subscribe confirmations are read too: they tell :meth:`confirmed` waiters.
            pubsub = self.redis.pubsub(ignore_subscribe_messages=False)
            self._confirmed.clear()
            self._unconfirmed = dict.fromkeys(self._handlers, 1)
            try:
                await pubsub.subscribe(*self._handlers)
            except BaseException:
                await _close_quietly(pubsub)
                raise
            self._ping = None
            self._pubsub = pubsub

    async def _read_forever(self) -> None:
        backoff = 0.1
        lost_at: float | None = None if self._pubsub is not None else time.monotonic()
        slice_started = time.monotonic()
        while not self._closing:
            try:
                if self._rebuild_reason is not None and self._pubsub is not None:
                    log.warning("%s; rebuilding the subscriber", self._rebuild_reason)
                    deaf, self._pubsub = self._pubsub, None
                    await _close_quietly(deaf)
                self._rebuild_reason = None
                if self._pubsub is None:
                    await self._open()
                    self.reconnects += 1
                    down = f" after {time.monotonic() - lost_at:.1f}s" if lost_at else ""
                    log.info(
                        "pub/sub reconnected%s; %d channels resubscribed", down, len(self._handlers)
                    )
                    lost_at = None
                    backoff = 0.1
                    if self.on_reconnect is not None:
                        self.on_reconnect()
                    continue
                pubsub = self._pubsub
                assert pubsub is not None
                message = await pubsub.get_message(timeout=self._poll)
                kind = message.get("type") if message is not None else None
                if message is not None and kind == "message":
                    await self._dispatch(message["channel"], message["data"])
                    # A backlog (a flood, junk or not) is read from buffers without ever
                    # suspending: give clients their turn every few milliseconds.
                    now = self._heard_at = time.monotonic()
                    if now - slice_started > READ_SLICE:
                        await asyncio.sleep(0)
                        slice_started = time.monotonic()
                else:
                    slice_started = time.monotonic()
                    if message is not None and kind in ("subscribe", "unsubscribe"):
                        channel = message["channel"]
                        name = channel.decode() if isinstance(channel, bytes) else channel
                        self._on_confirmation(kind, name)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._closing:
                    return
                if lost_at is None:
                    lost_at = time.monotonic()
                    log.error(
                        "Redis pub/sub connection lost (%s); local delivery goes on, "
                        "reconnecting with backoff",
                        error,
                    )
                else:
                    log.debug("pub/sub still unavailable (%s); next try in %.1fs", error, backoff)
                broken, self._pubsub = self._pubsub, None
                if broken is not None:
                    await _close_quietly(broken)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def _dispatch(self, channel: str | bytes, data: bytes) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        handler = self._handlers.get(name)
        if handler is None:
            return
        try:
            result = handler(name, data)
            if result is not None:
                await result
        except Exception:
            log.exception("handler for %s failed", name)

    def _on_watchdog(self, channel: str, data: bytes) -> None:
        if self._ping is not None and self._ping[0] == data:
            self._ping = None

    async def _watch(self) -> None:
        """Publish a ping to this node's own channel; have the subscriber rebuilt when a
        ping is not heard back within three intervals although it was published.

        One ping is outstanding at a time. When this loop itself ran late (the process
        was stalled), the outstanding ping gets a fresh window instead of a verdict: the
        reader may not have had its turn yet. So it does while the reader keeps getting
        messages: the ping is queued behind a backlog (a flood, say), the subscriber hears,
        and a rebuild would only throw the backlog away.
        """
        interval = self._watchdog_interval
        last_tick = time.monotonic()
        while not self._closing:
            await asyncio.sleep(interval)
            now = time.monotonic()
            stalled, last_tick = now - last_tick > 2 * interval, now
            if self._pubsub is None or self._rebuild_reason is not None:
                self._ping = None  # the reader is reconnecting
                continue
            if self._ping is not None:
                payload, sent_at = self._ping
                if stalled or self._heard_at > sent_at:
                    self._ping = (payload, now)
                elif now - sent_at > 3 * interval:
                    self._ping = None
                    self.rebuild(
                        f"pub/sub delivered nothing for {now - sent_at:.1f}s "
                        "although publishing works"
                    )
                continue
            self._pings += 1
            ping = self._ping = (b"ping %d" % self._pings, now)
            if not await self.publish(self._watchdog_channel, ping[0]) and self._ping is ping:
                self._ping = None


async def _close_quietly(pubsub: aioredis.client.PubSub) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # consumed here: callers that gave up leave no warning
