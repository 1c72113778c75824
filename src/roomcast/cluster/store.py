"""The key store: rooms and members in Redis (real, or embedded fakeredis).

Every Redis command of the chat system lives here, so embedded and real Redis run the
same code; only :func:`connect` differs in what it builds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from roomcast import jsonwire
from roomcast.cluster.keys import Keys

log = logging.getLogger("roomcast.store")


#: Redis connections per client; more concurrent commands queue for one.
MAX_CONNECTIONS = 32


def connect(url: str | None, embedded_server: Any = None,
            client_name: str | None = None) -> aioredis.Redis:
    """Return an asyncio Redis client for ``url``; with no url, an embedded fakeredis one.

    ``embedded_server`` (a ``fakeredis.FakeServer``) lets several clients share one store.
    ``client_name`` names every connection in Redis ``CLIENT LIST``.
    """
    if url is None:
        import fakeredis

        client: aioredis.Redis = fakeredis.FakeAsyncRedis(
            server=embedded_server, connection_pool_class=aioredis.BlockingConnectionPool,
            max_connections=MAX_CONNECTIONS)
        return client
    # A blocking pool: thousands of connections leaving at once wait for a Redis
    # connection instead of failing with "Too many connections".
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=10,
        client_name=client_name,
        socket_connect_timeout=2.0,
        # No command of ours blocks, so a reply slower than this means a dead peer.
        socket_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=10,
        # Fail fast: the bus reader and the presence loop retry with their own backoff,
        # and a ``say`` during an outage must not hang its sender for seconds.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=2),
    )
    return aioredis.Redis.from_pool(pool)


class Store:
    """Room and presence data in Redis; all methods are coroutines over one client."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._member_writes = _GroupCommit(redis)

    async def close(self) -> None:
        await self.redis.aclose()

    # rooms -------------------------------------------------------------------------------

    async def add_room(self, room: str) -> int:
        """Add ``room``; 1 when created, 0 when it already existed."""
        return int(await self.redis.sadd(self.keys.rooms, room))

    async def remove_room(self, room: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(self.keys.rooms, room)
            pipe.delete(self.keys.members(room))
            await pipe.execute()

    async def room_exists(self, room: str) -> bool:
        return bool(await self.redis.sismember(self.keys.rooms, room))

    async def list_rooms(self) -> list[str]:
        names = await self.redis.smembers(self.keys.rooms)
        return sorted(n.decode() if isinstance(n, bytes) else n for n in names)

    # members -----------------------------------------------------------------------------

    async def room_members(self, room: str) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(self.keys.members(room))
        return {_text(k): jsonwire.loads(v) for k, v in raw.items()}

    async def add_member(self, room: str, connection_id: str, node_id: str,
                         details: dict[str, Any]) -> None:
        """Store a membership; joins of one loop tick share one pipeline (group commit)."""
        await self._member_writes.submit((
            ("hset", self.keys.members(room), connection_id, jsonwire.dumps(details)),
            ("sadd", self.keys.node_members(node_id), f"{connection_id} {room}"),
        ))

    async def remove_member(self, room: str, connection_id: str, node_id: str) -> None:
        await self._member_writes.submit((
            ("hdel", self.keys.members(room), connection_id),
            ("srem", self.keys.node_members(node_id), f"{connection_id} {room}"),
        ))

    # presence ----------------------------------------------------------------------------

    async def heartbeat(self, node_id: str, ttl: float) -> bool:
        """Announce ``node_id`` alive for ``ttl`` seconds; False when its beat had lapsed.

        A lapsed beat means other nodes may have reaped this node's members (or Redis lost
        its data), so the caller should write them again.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.heartbeat(node_id), "1", px=max(1, int(ttl * 1000)), get=True)
            pipe.sadd(self.keys.nodes, node_id)
            previous, _ = await pipe.execute()
        return previous is not None

    async def is_alive(self, node_id: str) -> bool:
        """Whether ``node_id`` has an unexpired heartbeat."""
        return bool(await self.redis.exists(self.keys.heartbeat(node_id)))

    async def live_nodes(self) -> list[str]:
        """Ids of nodes whose heartbeat has not expired."""
        nodes = sorted(_text(n) for n in await self.redis.smembers(self.keys.nodes))
        if not nodes:
            return []
        alive = await self.redis.mget([self.keys.heartbeat(n) for n in nodes])
        return [n for n, beat in zip(nodes, alive, strict=True) if beat is not None]

    async def dead_nodes(self) -> list[str]:
        nodes = [_text(n) for n in await self.redis.smembers(self.keys.nodes)]
        if not nodes:
            return []
        alive = await self.redis.mget([self.keys.heartbeat(n) for n in nodes])
        return [n for n, beat in zip(nodes, alive, strict=True) if beat is None]

    async def reap_node(self, node_id: str, lock_seconds: float = 30.0) -> int | None:
        """Remove every room membership ``node_id`` owned, its heartbeat and its entry in
        the node set; return how many memberships went, or None when another node holds
        the reap lock (it is doing the same work).
        """
        got = await self.redis.set(
            self.keys.reap_lock(node_id), "1", nx=True, px=int(lock_seconds * 1000)
        )
        if not got:
            return None
        try:
            entries = await self.node_memberships(node_id)
            async with self.redis.pipeline(transaction=False) as pipe:
                for connection_id, room in entries:
                    pipe.hdel(self.keys.members(room), connection_id)
                pipe.delete(self.keys.node_members(node_id))
                pipe.delete(self.keys.heartbeat(node_id))
                pipe.srem(self.keys.nodes, node_id)
                await pipe.execute()
            return len(entries)
        finally:
            await self.redis.delete(self.keys.reap_lock(node_id))

    async def node_memberships(self, node_id: str) -> set[tuple[str, str]]:
        """The ``(connection id, room)`` pairs stored as owned by ``node_id``."""
        entries = await self.redis.smembers(self.keys.node_members(node_id))
        return {_membership(_text(entry)) for entry in entries}

    async def reconcile_node(self, node_id: str, rooms: set[str],
                             members: dict[tuple[str, str], dict[str, Any]]) -> int:
        """Make Redis hold exactly ``members`` (keyed ``(connection id, room)``) for
        ``node_id`` and at least ``rooms``; return how many stale memberships were removed.

        Used after an outage: whatever Redis lost is written again, and memberships this
        node dropped while Redis was unreachable are deleted.
        """
        stale = await self.node_memberships(node_id) - set(members)
        async with self.redis.pipeline(transaction=False) as pipe:
            if rooms:
                pipe.sadd(self.keys.rooms, *rooms)
            for connection_id, room in stale:
                pipe.hdel(self.keys.members(room), connection_id)
                pipe.srem(self.keys.node_members(node_id), f"{connection_id} {room}")
            for (connection_id, room), details in members.items():
                pipe.hset(self.keys.members(room), connection_id, jsonwire.dumps(details))
                pipe.sadd(self.keys.node_members(node_id), f"{connection_id} {room}")
            await pipe.execute()
        return len(stale)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())


def _membership(entry: str) -> tuple[str, str]:
    connection_id, _, room = entry.partition(" ")
    return connection_id, room


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


Command = tuple[Any, ...]


class _GroupCommit:
    """Collects the writes of one event-loop tick and sends them in one pipeline.

    Every caller still awaits its own write (and gets its error); batches go out one at a
    time, in order, so a leave queued after a join is never applied before it.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._commands: list[Command] = []
        self._done: asyncio.Future[None] | None = None
        self._order = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, commands: tuple[Command, ...]) -> None:
        if self._done is None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            self._done.add_done_callback(_retrieve)
            loop.call_soon(self._flush_soon)
        self._commands.extend(commands)
        await asyncio.shield(self._done)

    def _flush_soon(self) -> None:
        commands, done = self._commands, self._done
        self._commands, self._done = [], None
        if done is None:
            return
        task = asyncio.ensure_future(self._flush(commands, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, commands: list[Command], done: asyncio.Future[None]) -> None:
        try:
            async with self._order, self._redis.pipeline(transaction=False) as pipe:
                for name, *args in commands:
                    getattr(pipe, name)(*args)
                await pipe.execute()
        except BaseException as error:  # every waiter of the batch gets the error
            if not done.done():
                done.set_exception(error)
            if not isinstance(error, Exception):
                raise
        else:
            if not done.done():
                done.set_result(None)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # consumed here so a batch nobody awaits logs no warning
