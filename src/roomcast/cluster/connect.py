"""Clients of a Redis Cluster: the key store's or publisher's, and one per shard subscriber.

The seed URL names one node of the cluster; the client finds the others (``CLUSTER
SLOTS``). A shard subscriber talks to one master only, with the seed URL's credentials
and TLS settings, so :func:`connect_node` builds a plain client for that host and port.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

#: Commands of one client in flight at once; more wait for one of them to finish.
MAX_IN_FLIGHT = 32
#: Seconds a command may wait for its turn before it fails (as a full pool's would).
QUEUE_TIMEOUT = 10.0


class BoundedRedisCluster(RedisCluster):
    """A :class:`RedisCluster` whose commands queue when ``MAX_IN_FLIGHT`` are running.

    redis-py's cluster client refuses a command outright ("Too many connections") once a
    node's connections are all busy; a burst of thousands of leaves must wait instead,
    as it does on the single-Redis client's blocking pool.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        turns = self._turns
        if turns.locked():
            async with asyncio.timeout(QUEUE_TIMEOUT):
                await turns.acquire()
        else:
            await turns.acquire()  # free: returns without suspending
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            turns.release()


def connect_cluster(url: str, client_name: str | None = None) -> RedisCluster:
    """A cluster client seeded by ``url`` (``redis://`` or ``rediss://``, database 0).

    It connects on its first command, so a cluster that is down at start only makes
    that command fail.
    """
    return BoundedRedisCluster.from_url(
        url,
        client_name=client_name,
        # Room for MAX_IN_FLIGHT commands plus the pipelines of the group commit.
        max_connections=2 * MAX_IN_FLIGHT,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=10,
        # A master that failed leaves its slots uncovered until its replica takes over;
        # the other shards must go on serving meanwhile.
        require_full_coverage=False,
        # Fail fast, as on one Redis: callers retry with their own backoff. Each retry
        # after a connection error first asks the cluster for its layout again.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=2),
    )


def connect_node(url: str, host: str, port: int, client_name: str | None = None) -> aioredis.Redis:
    """A client of one cluster node at ``host``:``port``, with ``url``'s other settings.

    It never reconnects by itself: a subscriber whose connection broke must be placed
    again by its owner (the node may no longer own the slots it served).
    """
    parts = urllib.parse.urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    shown_host = f"[{host}]" if ":" in host else host
    netloc = f"{userinfo}@{shown_host}:{port}" if userinfo else f"{shown_host}:{port}"
    pool = aioredis.ConnectionPool.from_url(
        urllib.parse.urlunsplit(parts._replace(netloc=netloc, path="")),
        max_connections=2,
        client_name=client_name,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), retries=0),
    )
    return aioredis.Redis.from_pool(pool)
