"""The pub/sub reader under a backlog, and the watchdog's pings against forgeries.

In-process nodes on the test's own redis-server: a slow handler makes a backlog the
watchdog ping has to queue behind, as a flood does.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import redis.asyncio as aioredis
from cluster_support import TOKEN

from roomcast.cluster.bus import Bus
from roomcast.config import ClusterSettings, Config
from roomcast.testing import TestNode
from support import RedisProcess

WATCHDOG_INTERVAL = 0.2


def _config(redis_url: str) -> Config:
    return Config(
        id="a",
        redis_url=redis_url,
        server_token=TOKEN,
        socket_port=0,
        web_port=0,
        cluster=ClusterSettings(watchdog_interval=WATCHDOG_INTERVAL),
    )


async def test_a_backlog_longer_than_the_watchdog_window_is_read_not_thrown_away(
    redis_server: RedisProcess,
) -> None:
    async with TestNode(_config(redis_server.url)) as node:
        bus = node.api.cluster.bus
        handled: list[bytes] = []

        async def slow(channel: str, data: bytes) -> None:
            await asyncio.sleep(0.05)
            handled.append(data)

        await bus.subscribe("backlog", slow)
        count = 30  # 1.5 s of work: over three watchdog intervals (0.6 s)
        for i in range(count):
            await bus.publish("backlog", b"%d" % i)
        started = time.monotonic()
        while len(handled) < count:
            assert time.monotonic() - started < 10, f"{len(handled)} of {count} handled"
            await asyncio.sleep(0.05)
        assert handled == [b"%d" % i for i in range(count)]
        assert bus.reconnects == 0


async def test_the_reader_lets_other_tasks_run_while_it_works_through_a_backlog(
    redis_server: RedisProcess,
) -> None:
    async with TestNode(_config(redis_server.url)) as node:
        bus = node.api.cluster.bus
        handled = 0

        def busy(channel: str, data: bytes) -> None:
            nonlocal handled
            handled += 1
            spin_until = time.perf_counter() + 0.0005  # a costly message, 0.5 ms each
            while time.perf_counter() < spin_until:
                pass

        await bus.subscribe("busy", busy)
        publisher = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
        async with publisher.pipeline(transaction=False) as pipe:
            for _ in range(2000):  # a second of work, buffered before the reader sees it
                pipe.publish("busy", b"x")
            await pipe.execute()
        await publisher.aclose()
        lags: list[float] = []
        while handled < 2000:
            before = time.perf_counter()
            await asyncio.sleep(0)
            lags.append(time.perf_counter() - before)
        # Without a turn every few milliseconds there would be a handful of turns, each
        # waiting a large part of the second; scheduling on a busy machine adds outliers.
        assert len(lags) > 50, lags
        assert statistics.median(lags) < 0.03, sorted(lags)[-5:]


def test_a_forged_ping_does_not_answer_the_outstanding_one() -> None:
    bus = Bus(aioredis.Redis(), watchdog_channel="roomcast:watchdog:a")
    bus._ping = (b"ping 3", time.monotonic())
    for forged in (b"ping 2", b"ping 4", b"ping 3 ", b"", b"x" * 100_000):
        bus._on_watchdog("roomcast:watchdog:a", forged)
        assert bus._ping is not None
    bus._on_watchdog("roomcast:watchdog:a", b"ping 3")
    assert bus._ping is None
