"""The key store: rooms and members in Redis (real, or embedded fakeredis), or on a Redis
Cluster.

Every Redis command of the chat system lives here, so embedded and real Redis run the
same code; only :func:`connect` differs in what it builds. On a Redis Cluster the few
commands that span hash slots (a transaction over two keys, MGET, WATCH) take another
form, chosen where they are sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ResponseError, WatchError

from roomcast import jsonwire
from roomcast.cluster.keys import Keys

log = logging.getLogger("roomcast.store")


#: Redis connections per client; more concurrent commands queue for one.
MAX_CONNECTIONS = 32


def connect(
    url: str | None, embedded_server: Any = None, client_name: str | None = None
) -> aioredis.Redis:
    """Return an asyncio Redis client for ``url``; with no url, an embedded fakeredis one.

    ``embedded_server`` (a ``fakeredis.FakeServer``) lets several clients share one store.
    ``client_name`` names every connection in Redis ``CLIENT LIST``.
    """
    if url is None:
        import fakeredis

        client: aioredis.Redis = fakeredis.FakeAsyncRedis(
            server=embedded_server,
            connection_pool_class=aioredis.BlockingConnectionPool,
            max_connections=MAX_CONNECTIONS,
        )
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


#: Deletes KEYS[1] if it holds ARGV[1]: the reap lock's release on a Redis Cluster, where
#: WATCH/MULTI cannot be used through the cluster client.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Store:
    """Room and presence data in Redis; all methods are coroutines over one client."""

    def __init__(
        self, redis: aioredis.Redis | RedisCluster, keys: Keys, node_index: bool = True
    ) -> None:
        """``node_index=False`` (the embedded store) keeps no index of each node's
        memberships: that index lets other nodes reap a node that died, and lets a node
        mend what Redis lost in an outage, neither of which can happen to a store that
        lives and dies inside its one node. It would cost a command per join and leave."""
        self.redis = redis
        self.keys = keys
        self.node_index = node_index
        #: On a Redis Cluster: commands over several hash slots are split by slot.
        self.sharded = isinstance(redis, RedisCluster)
        if self.sharded != keys.cluster:
            raise ValueError("a Redis Cluster client needs Keys(cluster=True), and only it")
        self._member_writes = GroupCommit(redis)

    async def close(self) -> None:
        await self._member_writes.close()
        await self.redis.aclose()

    # rooms -------------------------------------------------------------------------------

    async def add_room(self, room: str) -> int:
        """Add ``room``; 1 when created, 0 when it already existed."""
        return int(await self.redis.sadd(self.keys.rooms, room))

    async def add_room_below(self, room: str, max_rooms: int) -> int | None:
        """Add ``room`` unless that would make more than ``max_rooms`` rooms: 1 when
        created, 0 when it already existed, None when the limit refused it.

        The count is read before the write, so creations racing for the last places may
        pass the limit by as many as race.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sismember(self.keys.rooms, room)
            pipe.scard(self.keys.rooms)
            exists, count = await pipe.execute()
        if exists:
            return 0
        if count >= max_rooms:
            return None
        return int(await self.redis.sadd(self.keys.rooms, room))

    async def count_rooms(self) -> int:
        """How many rooms exist (``SCARD``: the same cost for ten rooms or a million)."""
        return int(await self.redis.scard(self.keys.rooms))

    async def remove_room(self, room: str) -> None:
        # The two keys are in two hash slots on a Redis Cluster: no transaction there.
        async with self.redis.pipeline(transaction=not self.sharded) as pipe:
            pipe.srem(self.keys.rooms, room)
            pipe.delete(self.keys.members(room))
            await pipe.execute()

    async def room_exists(self, room: str) -> bool:
        return bool(await self.redis.sismember(self.keys.rooms, room))

    def room_check(self, room: str) -> asyncio.Future[bool]:
        """Whether ``room`` exists, asked with the membership writes: every check of one
        loop tick (and of the time the previous batch is in flight) goes out as one
        ``SMISMEMBER`` in the next batch, over the connection the writes use.

        The future is the caller's own: cancelling it cancels no one else's check.
        """
        return self._member_writes.check(self.keys.rooms, room)

    async def list_rooms(self) -> list[str]:
        names = await self.redis.smembers(self.keys.rooms)
        return sorted(n.decode() if isinstance(n, bytes) else n for n in names)

    # members -----------------------------------------------------------------------------

    async def room_members(self, room: str) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(self.keys.members(room))
        return {_text(k): jsonwire.loads(v) for k, v in raw.items()}

    async def add_member(
        self, room: str, connection_id: str, node_id: str, details: dict[str, Any]
    ) -> None:
        """Store a membership; joins of one loop tick share one batched write (group commit)."""
        stored = ("HSET", self.keys.members(room), connection_id, jsonwire.dumps(details))
        if not self.node_index:
            await self._member_writes.submit((stored,))
            return
        indexed = ("SADD", self.keys.node_members(node_id), f"{connection_id} {room}")
        await self._member_writes.submit((stored, indexed))

    async def remove_member(self, room: str, connection_id: str, node_id: str) -> None:
        removed = ("HDEL", self.keys.members(room), connection_id)
        if not self.node_index:
            await self._member_writes.submit((removed,))
            return
        unindexed = ("SREM", self.keys.node_members(node_id), f"{connection_id} {room}")
        await self._member_writes.submit((removed, unindexed))

    async def remove_memberships(self, connection_id: str, node_id: str, rooms: list[str]) -> None:
        """Remove one connection from every room of ``rooms``, all in one batched write."""
        if not rooms:
            return
        commands: list[Command] = [
            ("HDEL", self.keys.members(room), connection_id) for room in rooms
        ]
        if self.node_index:
            commands.append(
                (
                    "SREM",
                    self.keys.node_members(node_id),
                    *(f"{connection_id} {room}" for room in rooms),
                )
            )
        await self._member_writes.submit(tuple(commands))

    # presence ----------------------------------------------------------------------------

    async def heartbeat(self, node_id: str, ttl: float) -> bool:
        """Announce ``node_id`` alive for ``ttl`` seconds; False when its beat had lapsed.

        A lapsed beat means other nodes may have reaped this node's members (or Redis lost
        its data), so the caller should write them again.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            # The value is when it was written (ms), for `roomcast nodes`.
            beat = str(int(time.time() * 1000))
            pipe.set(self.keys.heartbeat(node_id), beat, px=max(1, int(ttl * 1000)), get=True)
            pipe.sadd(self.keys.nodes, node_id)
            previous, _ = await pipe.execute()
        return previous is not None

    async def last_heartbeats(self) -> dict[str, int]:
        """Live node id -> when its heartbeat was last written (ms since the epoch)."""
        nodes = sorted(_text(n) for n in await self.redis.smembers(self.keys.nodes))
        if not nodes:
            return {}
        beats = await self._get_many([self.keys.heartbeat(n) for n in nodes])
        return {
            node: int(_text(beat)) if _text(beat).isdigit() else 0
            for node, beat in zip(nodes, beats, strict=True)
            if beat is not None
        }

    async def room_sizes(self, rooms: list[str]) -> dict[str, int]:
        """Room -> how many members it has, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.hlen(self.keys.members(room))
            sizes = await pipe.execute()
        return {room: int(size) for room, size in zip(rooms, sizes, strict=True)}

    async def is_alive(self, node_id: str) -> bool:
        """Whether ``node_id`` has an unexpired heartbeat."""
        return bool(await self.redis.exists(self.keys.heartbeat(node_id)))

    async def live_nodes(self) -> list[str]:
        """Ids of nodes whose heartbeat has not expired."""
        nodes = sorted(_text(n) for n in await self.redis.smembers(self.keys.nodes))
        if not nodes:
            return []
        alive = await self._get_many([self.keys.heartbeat(n) for n in nodes])
        return [n for n, beat in zip(nodes, alive, strict=True) if beat is not None]

    async def dead_nodes(self) -> list[str]:
        nodes = [_text(n) for n in await self.redis.smembers(self.keys.nodes)]
        if not nodes:
            return []
        alive = await self._get_many([self.keys.heartbeat(n) for n in nodes])
        return [n for n, beat in zip(nodes, alive, strict=True) if beat is None]

    async def _get_many(self, keys: list[str]) -> list[Any]:
        """MGET, split by hash slot on a Redis Cluster (one key per node's slot there)."""
        if isinstance(self.redis, RedisCluster):
            return await self.redis.mget_nonatomic(keys)
        return await self.redis.mget(keys)

    async def reap_node(self, node_id: str, lock_seconds: float = 30.0) -> int | None:
        """Remove every room membership ``node_id`` owned, its heartbeat and its entry in
        the node set; return how many memberships went, or None when another node holds
        the reap lock (it is doing the same work).
        """
        entries = await self.reap_node_entries(node_id, lock_seconds)
        return None if entries is None else len(entries)

    async def reap_node_entries(
        self, node_id: str, lock_seconds: float = 30.0
    ) -> set[tuple[str, str]] | None:
        """:meth:`reap_node`, returning the ``(connection id, room)`` memberships removed
        (read before they were deleted), or None when another node holds the reap lock."""
        lock = self.keys.reap_lock(node_id)
        token = os.urandom(16).hex()
        got = await self.redis.set(lock, token, nx=True, px=int(lock_seconds * 1000))
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
            return entries
        finally:
            await self._release(lock, token)

    async def _release(self, lock: str, token: str) -> bool:
        """Delete ``lock`` only while it still holds ``token``: a lock that expired and was
        taken by another node meanwhile is theirs, and stays. True when it was deleted."""
        if isinstance(self.redis, RedisCluster):
            # One key, so one slot: a script is atomic there as WATCH/MULTI is here.
            deleted = self.redis.eval(_RELEASE_SCRIPT, 1, lock, token)
            return bool(await deleted)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(lock)
                if _text(await pipe.get(lock) or b"") != token:
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]  # untyped in redis-py
                pipe.delete(lock)
                await pipe.execute()
            except WatchError:  # it changed between our read and the delete: not ours
                return False
        return True

    async def node_memberships(self, node_id: str) -> set[tuple[str, str]]:
        """The ``(connection id, room)`` pairs stored as owned by ``node_id``."""
        entries = await self.redis.smembers(self.keys.node_members(node_id))
        return {_membership(_text(entry)) for entry in entries}

    async def reconcile_node(
        self, node_id: str, rooms: set[str], members: dict[tuple[str, str], dict[str, Any]]
    ) -> int:
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
                if self.node_index:
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


class GroupCommit:
    """Collects writes (membership writes, or the bus's publishes) and sends them in
    batches, one pipelined write each.

    Writes submitted in one event-loop tick, or while the previous batch is being written,
    form the next batch. Every caller still awaits its own write (and gets its error);
    batches go out one at a time, in order, so a leave queued after a join is never
    applied before it.

    Batches go over one connection kept for them, written and read directly rather than
    through a redis-py ``Pipeline``: most batches hold a single join, and the pipeline's
    bookkeeping (a pool checkout, its stack, its reset) cost more than the write itself.
    On a Redis Cluster a batch's keys live on several nodes, so it goes out as a cluster
    pipeline instead: one round trip to each node concerned, redirections followed.
    """

    def __init__(self, redis: aioredis.Redis | RedisCluster) -> None:
        self._cluster = redis if isinstance(redis, RedisCluster) else None
        self._pool = None if isinstance(redis, RedisCluster) else redis.connection_pool
        self._connection: AbstractConnection | None = None  # taken from the pool on first use
        self._commands: list[Command] = []
        # One future per caller of the batch being collected: a cancelled caller cancels
        # its own, never the batch (cheaper than shielding one shared future per caller).
        self._waiters: list[asyncio.Future[None]] = []
        # Membership checks of the batch being collected: (set key, member, caller's future).
        self._checks: list[tuple[str, str, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None  # writing batches until none is left

    async def submit(self, commands: tuple[Command, ...]) -> None:
        loop = asyncio.get_running_loop()
        if self._writer is None:  # its first step runs next tick: this tick's writes join
            self._writer = loop.create_task(self._write_batches())
        waiter = loop.create_future()
        self._waiters.append(waiter)
        self._commands.extend(commands)
        await waiter

    def check(self, key: str, member: str) -> asyncio.Future[bool]:
        """Whether ``member`` is in the set ``key``, read in the next batch (before its
        writes; a batch's writes never touch a set that is checked)."""
        loop = asyncio.get_running_loop()
        if self._writer is None:
            self._writer = loop.create_task(self._write_batches())
        waiter: asyncio.Future[bool] = loop.create_future()
        self._checks.append((key, member, waiter))
        return waiter

    async def close(self) -> None:
        """Hand the batch connection back to the pool (which the client then closes)."""
        connection, self._connection = self._connection, None
        if connection is not None and self._pool is not None:
            await self._pool.release(connection)

    async def _send(self, batch: list[Command]) -> list[Any]:
        connection = self._connection
        if connection is None:  # get_connection is untyped in redis-py
            assert self._pool is not None
            connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
            self._connection = connection
        # Retried like a pipeline: on a connection error the connection is closed (it
        # reconnects on the next try) and the whole batch sent again; every command in
        # it is idempotent.
        replies: list[Any] = await connection.retry.call_with_retry(
            lambda: _send_batch(connection, batch),
            lambda _: connection.disconnect(),
        )
        return replies

    async def _write_batches(self) -> None:
        try:
            while self._waiters or self._checks:
                commands, waiters, checks = self._commands, self._waiters, self._checks
                self._commands, self._waiters, self._checks = [], [], []
                await self._write(commands, waiters, checks)
        finally:
            self._writer = None
            if self._waiters or self._checks:  # cancelled meanwhile: those left get a writer
                self._writer = asyncio.get_running_loop().create_task(self._write_batches())

    async def _write(
        self,
        commands: list[Command],
        waiters: list[asyncio.Future[None]],
        checks: list[tuple[str, str, asyncio.Future[bool]]],
    ) -> None:
        reads: dict[str, list[str]] = {}  # set key -> distinct members asked, in order
        for key, member, _ in checks:
            asked = reads.setdefault(key, [])
            if member not in asked:
                asked.append(member)
        try:
            batch = _merged(commands)
            if checks:
                batch = [("SMISMEMBER", key, *members) for key, members in reads.items()] + batch
            if self._cluster is not None:
                replies = await _send_cluster_batch(self._cluster, batch)
            else:
                replies = await self._send(batch)
        except BaseException as error:  # every waiter of the batch gets the error
            futures: list[asyncio.Future[Any]] = [*waiters, *(check[2] for check in checks)]
            for waiter in futures:
                if not waiter.done():
                    waiter.set_exception(error)
                    waiter.add_done_callback(_retrieve)
            if not isinstance(error, Exception):
                raise
        else:
            if checks:
                found: dict[tuple[str, str], bool] = {}
                for (key, members), reply in zip(reads.items(), replies, strict=False):
                    for member, flag in zip(members, reply, strict=True):
                        found[(key, member)] = bool(flag)
                for key, member, check in checks:
                    if not check.done():
                        check.set_result(found[(key, member)])
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


async def _send_batch(connection: AbstractConnection, commands: list[Command]) -> list[Any]:
    """Write ``commands`` at once and read every reply; return the replies, or raise the
    first error reply.

    All replies are read before raising, so the connection stays in step for the next
    batch (redis-py closes it itself when a read fails or is cancelled halfway).
    Commands are packed by hiredis, in C: redis-py's asyncio connection packs them in
    Python, some 800 opcodes for a join's write (and for each publish of the bus).
    """
    packed = b"".join([hiredis.pack_command(command) for command in commands])
    await connection.send_packed_command(packed)
    error: ResponseError | None = None
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await connection.read_response())
        except ResponseError as reply:
            error = error or reply
    if error is not None:
        raise error
    return replies


async def _send_cluster_batch(cluster: RedisCluster, commands: list[Command]) -> list[Any]:
    """Send ``commands`` as one non-transactional cluster pipeline (split by node, sent to
    each at once); return the replies, or raise the first error reply."""
    async with cluster.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute()
    return replies


#: Commands whose arguments add up: two on one key are one with both argument lists.
_FOLDABLE = frozenset({"HSET", "HDEL", "SADD", "SREM"})


def _merged(commands: list[Command]) -> list[Command]:
    """Fold a batch into one multi-argument command per key and run of one command name.

    ``HSET k f1 v1`` + ``HSET k f2 v2`` becomes ``HSET k f1 v1 f2 v2`` (likewise SADD,
    SREM, HDEL): Redis (and above all the embedded fakeredis, which parses and runs every
    command in Python) does far less work for one command with many arguments. Other
    commands (``PUBLISH``) are kept one by one. Each key keeps the order of its commands
    (a join then a leave of one member stay two commands in that order); commands on
    different keys do not interact, so their relative order does not matter. A batch with
    no key twice (most are: one join) is returned as it is.
    """
    if len(commands) < 2 or len({command[1] for command in commands}) == len(commands):
        return commands
    by_key: dict[Any, list[list[Any]]] = {}
    for name, key, *args in commands:
        runs = by_key.get(key)
        if runs is None:
            by_key[key] = [[name, key, *args]]
        elif runs[-1][0] == name and name in _FOLDABLE:
            runs[-1].extend(args)
        else:
            runs.append([name, key, *args])
    return [tuple(run) for runs in by_key.values() for run in runs]


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # consumed here so a waiter nobody awaits any more logs no warning
