"""Broadcast to roomcast rooms from any Python process, with no node running in it.

    from roomcast.emitter import SyncEmitter

    emitter = SyncEmitter("redis://127.0.0.1:6379/0", server_token="…")
    emitter.broadcast("orders", {"id": 42, "status": "shipped"})

A broadcast is published on the room's channel exactly as a node publishes a ``say``
(signed with the cluster's server token), so every node with members in the room
delivers it once to each of them, as a chat message from ``0``. :class:`Emitter` is the
asyncio version (FastAPI, aiohttp); :class:`SyncEmitter` has the same methods as plain
functions (Django views, Flask, Celery tasks).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from roomcast import jsonwire
from roomcast.cluster.envelope import derive_key, seal
from roomcast.cluster.keys import Keys

__all__ = ["Emitter", "SyncEmitter"]


class _Messages:
    """What both emitters share: key names, the bus key, the payload and status shapes."""

    def __init__(self, server_token: str, key_prefix: str, redis_cluster: bool) -> None:
        self.keys = Keys(key_prefix, cluster=redis_cluster)
        self.sharded = redis_cluster
        self._key = derive_key(server_token)
        self.sender = f"emitter:{socket.gethostname()}-{os.getpid()}"

    def envelope(self, room: str, message: Any) -> tuple[str, bytes]:
        """The channel and the signed bytes that broadcast ``message`` to ``room``."""
        if not room or message is None or message == "":
            raise ValueError("both room and message are required")
        payload = {
            "message": message,
            "room": room,
            "from": 0,
            "context": "user",
            "sentAt": int(time.time() * 1000),
        }
        channel = self.keys.room_channel(room)
        body = jsonwire.dumps(payload)
        return channel, seal(self._key, self.sender, body, channel=channel.encode())

    @staticmethod
    def status(room: str, raw: dict[Any, Any]) -> dict[str, Any]:
        """``room_status``'s shape from a room's member hash."""
        members: dict[str, dict[str, Any]] = {}
        for key, value in raw.items():
            member = key.decode() if isinstance(key, bytes) else key
            details = jsonwire.loads(value)
            joined = details.get("joinedAt") if isinstance(details, dict) else None
            members[member] = {"joinedAt": joined, "id": member}
        return {"room": room, "membersCount": len(members), "members": members}


def _names(raw: Any) -> list[str]:
    return sorted(n.decode() if isinstance(n, bytes) else n for n in raw)


class Emitter:
    """Broadcast to rooms and read them, from asyncio code: ``await emitter.broadcast(…)``.

    ``redis_url``, ``server_token`` and ``key_prefix`` must be those of the nodes. Call
    :meth:`close` (or use ``async with``) when done.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        server_token: str,
        key_prefix: str = "roomcast:",
        redis_cluster: bool = False,
    ) -> None:
        self._messages = _Messages(server_token, key_prefix, redis_cluster)
        self._redis: Any = (
            aioredis.RedisCluster.from_url(redis_url)
            if redis_cluster
            else aioredis.Redis.from_url(redis_url)
        )

    async def broadcast(self, room: str, message: Any) -> None:
        """Send ``message`` (any JSON value) to every member of ``room`` on every node."""
        channel, data = self._messages.envelope(room, message)
        if self._messages.sharded:  # a room's channel is a shard channel on a cluster
            await self._redis.spublish(channel, data)
        else:
            await self._redis.publish(channel, data)

    async def room_status(self, room: str) -> dict[str, Any]:
        """``{"room", "membersCount", "members": {id: {"joinedAt", "id"}}}``."""
        keys = self._messages.keys
        if not await self._redis.sismember(keys.rooms, room):
            raise LookupError(f"room does not exist ({room})")
        return _Messages.status(room, await self._redis.hgetall(keys.members(room)))

    async def rooms(self) -> list[str]:
        """Every room's name, sorted."""
        return _names(await self._redis.smembers(self._messages.keys.rooms))

    async def close(self) -> None:
        await self._redis.aclose()

    async def __aenter__(self) -> Emitter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SyncEmitter:
    """:class:`Emitter`'s methods as plain functions, for code without an event loop."""

    def __init__(
        self,
        redis_url: str,
        *,
        server_token: str,
        key_prefix: str = "roomcast:",
        redis_cluster: bool = False,
    ) -> None:
        self._messages = _Messages(server_token, key_prefix, redis_cluster)
        self._redis: Any = (
            redis.RedisCluster.from_url(redis_url)
            if redis_cluster
            else redis.Redis.from_url(redis_url)
        )

    def broadcast(self, room: str, message: Any) -> None:
        """Send ``message`` (any JSON value) to every member of ``room`` on every node."""
        channel, data = self._messages.envelope(room, message)
        if self._messages.sharded:  # a room's channel is a shard channel on a cluster
            self._redis.spublish(channel, data)
        else:
            self._redis.publish(channel, data)

    def room_status(self, room: str) -> dict[str, Any]:
        """``{"room", "membersCount", "members": {id: {"joinedAt", "id"}}}``."""
        keys = self._messages.keys
        if not self._redis.sismember(keys.rooms, room):
            raise LookupError(f"room does not exist ({room})")
        return _Messages.status(room, self._redis.hgetall(keys.members(room)))

    def rooms(self) -> list[str]:
        """Every room's name, sorted."""
        return _names(self._redis.smembers(self._messages.keys.rooms))

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> SyncEmitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
