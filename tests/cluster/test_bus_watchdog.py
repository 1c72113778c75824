"""The pub/sub watchdog: a subscriber that stays connected but hears nothing is rebuilt.

Two in-process nodes share the test's own redis-server. Node b's subscriber is made deaf
the way it happens in production: its socket stays open and Redis stays reachable, but
nothing is delivered to it any more.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cluster_support import TOKEN
from redis.asyncio import Redis

from roomcast.cluster.bus import Bus
from roomcast.config import ClusterSettings, Config
from roomcast.testing import TestConnection, TestNode
from support import RedisProcess

WATCHDOG_INTERVAL = 0.2


def _config(node_id: str, redis_url: str) -> Config:
    return Config(
        id=node_id,
        redis_url=redis_url,
        server_token=TOKEN,
        socket_port=0,
        web_port=0,
        cluster=ClusterSettings(
            presence_ttl=2.0, rpc_timeout=1.0, watchdog_interval=WATCHDOG_INTERVAL
        ),
    )


def _message_is(text: str) -> Callable[[Any], bool]:
    return lambda message: message.get("message") == text


async def _chat_works(sender: TestConnection, listener: TestConnection, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    probe = uuid.uuid4().hex  # earlier probes, already received, must not count
    attempt = 0
    while True:
        attempt += 1
        text = f"probe {probe} {attempt}"
        await sender.verb("say", room="defaultRoom", message=text)
        try:
            await listener.wait_for(_message_is(text), timeout=0.2)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


async def test_a_deaf_subscriber_is_detected_and_rebuilt(
    redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        TestNode(_config("a", redis_server.url)) as node_a,
        TestNode(_config("b", redis_server.url)) as node_b,
    ):
        alice, bob = await node_a.connect(), await node_b.connect()
        await alice.verb("roomAdd", room="defaultRoom")
        await bob.verb("roomAdd", room="defaultRoom")
        await _chat_works(alice, bob, timeout=3)

        bus = node_b.api.cluster.bus
        assert isinstance(bus, Bus)
        deaf = bus._pubsub
        assert deaf is not None and bus.reconnects == 0
        # Redis drops every subscription of that connection; the socket stays healthy.
        await deaf.execute_command("UNSUBSCRIBE")
        started = time.monotonic()
        while bus.reconnects == 0:
            assert time.monotonic() - started < 10 * WATCHDOG_INTERVAL, "not rebuilt"
            await asyncio.sleep(0.02)
        assert bus._pubsub is not deaf
        await _chat_works(alice, bob, timeout=3)
        # The key store kept working throughout: nothing failed but the subscriber.
        assert await node_b.api.cluster.store.live_nodes() == ["a", "b"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("rebuilding the subscriber" in r.getMessage() for r in caplog.records)


async def test_the_watchdog_leaves_a_healthy_subscriber_alone(redis_server: RedisProcess) -> None:
    async with TestNode(_config("a", redis_server.url)) as node_a:
        channel = node_a.api.cluster.keys.watchdog_channel("a")
        async with Redis.from_url(redis_server.url) as client, client.pubsub() as pings:
            await pings.subscribe(channel)
            # The watchdog sends its next ping only once the last one was heard (or the
            # subscriber was rebuilt), so five pings are four verdicts on a healthy one.
            heard = 0
            deadline = time.monotonic() + 20 * WATCHDOG_INTERVAL
            while heard < 5:
                assert time.monotonic() < deadline, f"only {heard} watchdog pings published"
                ping = await pings.get_message(
                    ignore_subscribe_messages=True, timeout=WATCHDOG_INTERVAL
                )
                heard += ping is not None
        assert node_a.api.cluster.bus.reconnects == 0
