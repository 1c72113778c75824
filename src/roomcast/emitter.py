"""Broadcast to roomcast rooms from any Python process, with no node running in it.

    from roomcast import load_config
    from roomcast.emitter import SyncEmitter

    emitter = SyncEmitter.from_config(load_config(config_file="roomcast.toml"))
    emitter.broadcast("orders", {"id": 42, "status": "shipped"})

A broadcast is published on the room's channel exactly as a node publishes a ``say``
(signed with the cluster's server token), so every node with members in the room
delivers it once to each of them, as a chat message from ``0``. In a room with history
(the ``[chat]`` settings ``history_size``, ``history_ttl``, ``history_rooms``, which the
emitter must share with the nodes) it goes through the nodes' history script instead: it
gets the room's next offset, is kept for ``roomHistory`` and recovery, and is published
with its position, in the same round trip. :meth:`Emitter.from_config` takes all of these
from the nodes' settings. :class:`Emitter` is the asyncio version (FastAPI, aiohttp);
:class:`SyncEmitter` has the same methods as plain functions (Django views, Flask, Celery
tasks).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import redis
import redis.asyncio as aioredis

from roomcast import jsonwire
from roomcast.cluster.envelope import derive_key, seal
from roomcast.cluster.history import (
    APPEND_SCRIPT,
    HistoryPolicy,
    append_arguments,
    appended,
    epoch_prefix,
    signed_header,
    with_position,
)
from roomcast.cluster.keys import Keys

if TYPE_CHECKING:
    from roomcast.config import Config

__all__ = ["Emitter", "SyncEmitter"]

#: The ``[chat]`` settings' defaults: no room keeps history.
DEFAULT_HISTORY_SIZE = 0
DEFAULT_HISTORY_TTL = 300.0
DEFAULT_HISTORY_ROOMS = ("*",)


class _Kept(NamedTuple):
    """One call of the history script, and what it publishes."""

    keys: list[str]
    args: list[Any]
    channel: str
    header: bytes
    body: bytes

    def published(self, result: Any) -> bytes:
        """What the script publishes, from its result: for nodes that listen on another
        Redis, which the emitter then publishes to itself."""
        offset, epoch = appended(result)
        return self.header + with_position(self.body, offset, epoch)


class _Messages:
    """What both emitters share: key names, history rooms, the signed bytes of a broadcast
    and the status shape."""

    def __init__(
        self,
        server_token: str,
        key_prefix: str,
        redis_cluster: bool,
        history: HistoryPolicy,
        *,
        separate_pubsub: bool,
    ) -> None:
        if history.size < 0:
            raise ValueError(f"history_size must be 0 or more, not {history.size!r}")
        if history.size and history.ttl <= 0:
            raise ValueError(f"history_ttl must be above 0, not {history.ttl!r}")
        self.keys = Keys(key_prefix, cluster=redis_cluster)
        self.sharded = redis_cluster
        self.history = history
        self._key = derive_key(server_token)
        self.sender = f"emitter:{socket.gethostname()}-{os.getpid()}"
        self._prefix = epoch_prefix()
        #: The command the history script publishes with: '' when the nodes listen on
        #: another Redis, which the emitter then publishes to itself.
        self.publish_command = "" if separate_pubsub else "SPUBLISH" if redis_cluster else "PUBLISH"

    def body(self, room: str, message: Any) -> bytes:
        if not room or message is None or message == "":
            raise ValueError("both room and message are required")
        payload = {
            "message": message,
            "room": room,
            "from": 0,
            "context": "user",
            "sentAt": int(time.time() * 1000),
        }
        return jsonwire.dumps(payload)

    def envelope(self, room: str, message: Any) -> tuple[str, bytes]:
        """The channel and the signed bytes that broadcast ``message`` to ``room``."""
        channel = self.keys.room_channel(room)
        body = self.body(room, message)
        return channel, seal(self._key, self.sender, body, channel=channel.encode())

    def kept(self, room: str, message: Any) -> _Kept:
        """The history script's call that keeps ``message`` in ``room`` and publishes it."""
        body = self.body(room, message)
        channel = self.keys.room_channel(room)
        header = signed_header(self._key, self.sender, body, channel=channel)
        keys, args = append_arguments(
            self.keys,
            room,
            header,
            body,
            size=self.history.size,
            ttl=self.history.ttl,
            prefix=self._prefix,
            publish_command=self.publish_command,
        )
        return _Kept(keys, args, channel, header, body)

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


def _settings(config: Config) -> tuple[str, dict[str, Any]]:
    """An emitter's URL and keyword options from the nodes' settings."""
    if config.redis_url is None:
        raise ValueError("an emitter needs the nodes' Redis, and these settings have no redis_url")
    chat = config.chat
    return config.redis_url, {
        "server_token": config.server_token,
        "key_prefix": config.cluster.key_prefix,
        "redis_cluster": config.redis_cluster,
        "pubsub_url": config.pubsub_url,
        "history_size": chat.history_size,
        "history_ttl": chat.history_ttl,
        "history_rooms": tuple(chat.history_rooms),
    }


def _separate(redis_url: str, pubsub_url: str | None) -> bool:
    return pubsub_url is not None and pubsub_url != redis_url


def _async_client(url: str, redis_cluster: bool) -> Any:
    return aioredis.RedisCluster.from_url(url) if redis_cluster else aioredis.Redis.from_url(url)


def _sync_client(url: str, redis_cluster: bool) -> Any:
    return redis.RedisCluster.from_url(url) if redis_cluster else redis.Redis.from_url(url)


def _connected(
    client: Callable[[str, bool], Any],
    redis_url: str,
    server_token: str,
    key_prefix: str,
    redis_cluster: bool,
    pubsub_url: str | None,
    history_size: int,
    history_ttl: float,
    history_rooms: Iterable[str],
) -> tuple[_Messages, Any, Any, Any]:
    """What both emitters hold, with ``client`` (sync or async) making the Redis clients:
    the message builder, the store client, the pub/sub client and the history script
    (None when no room keeps history)."""
    separate = _separate(redis_url, pubsub_url)
    policy = HistoryPolicy(history_size, history_ttl, list(history_rooms))
    messages = _Messages(server_token, key_prefix, redis_cluster, policy, separate_pubsub=separate)
    store = client(redis_url, redis_cluster)
    pubsub = client(pubsub_url, redis_cluster) if separate and pubsub_url is not None else store
    append = store.register_script(APPEND_SCRIPT) if history_size else None
    return messages, store, pubsub, append


def _names(raw: Any) -> list[str]:
    return sorted(n.decode() if isinstance(n, bytes) else n for n in raw)


class Emitter:
    """Broadcast to rooms and read them, from asyncio code: ``await emitter.broadcast(…)``.

    Every option is the node setting of the same name and must have the nodes' value:
    ``redis_url``, ``server_token``, ``key_prefix``, ``redis_cluster``, ``pubsub_url``
    (when the nodes' pub/sub is another Redis) and the ``[chat]`` settings
    ``history_size``, ``history_ttl``, ``history_rooms`` (an emitter that does not know a
    room keeps history sends there what the nodes drop). :meth:`from_config` takes them
    all from the nodes' settings. Call :meth:`close` (or use ``async with``) when done.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        server_token: str,
        key_prefix: str = "roomcast:",
        redis_cluster: bool = False,
        pubsub_url: str | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_ttl: float = DEFAULT_HISTORY_TTL,
        history_rooms: Iterable[str] = DEFAULT_HISTORY_ROOMS,
    ) -> None:
        self._messages, self._redis, self._pubsub, self._append = _connected(
            _async_client,
            redis_url,
            server_token,
            key_prefix,
            redis_cluster,
            pubsub_url,
            history_size,
            history_ttl,
            history_rooms,
        )

    @classmethod
    def from_config(cls, config: Config) -> Emitter:
        """An emitter for the nodes that run with ``config`` (from
        :func:`roomcast.load_config`): their Redis, token, key prefix and history rooms."""
        url, options = _settings(config)
        return cls(url, **options)

    async def broadcast(self, room: str, message: Any) -> None:
        """Send ``message`` (any JSON value) to every member of ``room`` on every node;
        in a room with history it is kept too, with the room's next offset."""
        messages = self._messages
        if self._append is not None and messages.history.keeps(room):
            kept = messages.kept(room, message)
            result = await self._append(keys=kept.keys, args=kept.args)
            if messages.publish_command:
                return  # the script published it
            channel, data = kept.channel, kept.published(result)
        else:
            channel, data = messages.envelope(room, message)
        if messages.sharded:  # a room's channel is a shard channel on a cluster
            await self._pubsub.spublish(channel, data)
        else:
            await self._pubsub.publish(channel, data)

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
        if self._pubsub is not self._redis:
            await self._pubsub.aclose()

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
        pubsub_url: str | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_ttl: float = DEFAULT_HISTORY_TTL,
        history_rooms: Iterable[str] = DEFAULT_HISTORY_ROOMS,
    ) -> None:
        self._messages, self._redis, self._pubsub, self._append = _connected(
            _sync_client,
            redis_url,
            server_token,
            key_prefix,
            redis_cluster,
            pubsub_url,
            history_size,
            history_ttl,
            history_rooms,
        )

    @classmethod
    def from_config(cls, config: Config) -> SyncEmitter:
        """An emitter for the nodes that run with ``config`` (from
        :func:`roomcast.load_config`): their Redis, token, key prefix and history rooms."""
        url, options = _settings(config)
        return cls(url, **options)

    def broadcast(self, room: str, message: Any) -> None:
        """Send ``message`` (any JSON value) to every member of ``room`` on every node;
        in a room with history it is kept too, with the room's next offset."""
        messages = self._messages
        if self._append is not None and messages.history.keeps(room):
            kept = messages.kept(room, message)
            result = self._append(keys=kept.keys, args=kept.args)
            if messages.publish_command:
                return  # the script published it
            channel, data = kept.channel, kept.published(result)
        else:
            channel, data = messages.envelope(room, message)
        if messages.sharded:  # a room's channel is a shard channel on a cluster
            self._pubsub.spublish(channel, data)
        else:
            self._pubsub.publish(channel, data)

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
        if self._pubsub is not self._redis:
            self._pubsub.close()

    def __enter__(self) -> SyncEmitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
