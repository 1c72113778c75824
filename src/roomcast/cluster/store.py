"""The key store: rooms and members in Redis (real, or embedded fakeredis).

Every Redis command of the chat system lives here, so embedded and real Redis run the
same code; only :func:`connect` differs in what it builds.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis

from roomcast import jsonwire
from roomcast.cluster.keys import Keys

log = logging.getLogger("roomcast.store")


def connect(url: str | None, embedded_server: Any = None) -> aioredis.Redis:
    """Return an asyncio Redis client for ``url``; with no url, an embedded fakeredis one.

    ``embedded_server`` (a ``fakeredis.FakeServer``) lets several clients share one store.
    """
    if url is None:
        import fakeredis

        client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=embedded_server)
        return client
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
        health_check_interval=10,
    )


class Store:
    """Room and presence data in Redis; all methods are coroutines over one client."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

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
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.members(room), connection_id, jsonwire.dumps(details))
            pipe.sadd(self.keys.node_members(node_id), f"{connection_id} {room}")
            await pipe.execute()

    async def remove_member(self, room: str, connection_id: str, node_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self.keys.members(room), connection_id)
            pipe.srem(self.keys.node_members(node_id), f"{connection_id} {room}")
            await pipe.execute()

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

    async def reap_node(self, node_id: str, lock_seconds: float = 30.0) -> int:
        """Remove every room membership ``node_id`` owned; return how many were removed.

        A short lock keeps two live nodes from reaping the same dead one at once.
        """
        got = await self.redis.set(
            self.keys.reap_lock(node_id), "1", nx=True, px=int(lock_seconds * 1000)
        )
        if not got:
            return 0
        try:
            entries = [_text(e) for e in await self.redis.smembers(self.keys.node_members(node_id))]
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    connection_id, _, room = entry.partition(" ")
                    pipe.hdel(self.keys.members(room), connection_id)
                pipe.delete(self.keys.node_members(node_id))
                pipe.delete(self.keys.heartbeat(node_id))
                pipe.srem(self.keys.nodes, node_id)
                await pipe.execute()
            return len(entries)
        finally:
            await self.redis.delete(self.keys.reap_lock(node_id))

    async def ping(self) -> bool:
        return bool(await self.redis.ping())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
