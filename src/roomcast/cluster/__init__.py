"""Everything that makes several nodes one chat system: store, pub/sub, RPC, presence."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any

from roomcast.cluster.bus import Bus
from roomcast.cluster.connect import connect_cluster, connect_node
from roomcast.cluster.errors import REDIS_DOWN, WireErrors
from roomcast.cluster.history import HistoryStore
from roomcast.cluster.keys import Keys
from roomcast.cluster.presence import Presence
from roomcast.cluster.rpc import Rpc
from roomcast.cluster.sharded import ShardedBus
from roomcast.cluster.store import Store, connect

__all__ = [
    "REDIS_DOWN",
    "Bus",
    "Cluster",
    "HistoryStore",
    "Keys",
    "Presence",
    "Rpc",
    "ShardedBus",
    "Store",
    "WireErrors",
]

log = logging.getLogger("roomcast.cluster")


class Cluster:
    """The node's link to Redis: key store, bus, RPC and presence, started and stopped together.

    With no ``redis_url`` both clients talk to one embedded fakeredis server: the same code,
    a single node. With ``redis_cluster`` the URLs are seed nodes of a Redis Cluster: keys
    are hash-tagged and pub/sub is sharded (:class:`ShardedBus`).
    """

    def __init__(
        self,
        *,
        node_id: str,
        token: str,
        redis_url: str | None,
        pubsub_url: str | None,
        key_prefix: str,
        rpc_timeout: float,
        presence_ttl: float,
        watchdog_interval: float,
        owns_connection: Callable[[str], bool],
        errors: WireErrors | None = None,
        redis_cluster: bool = False,
    ) -> None:
        self.node_id = node_id
        self.token = token
        if redis_cluster and redis_url is None:
            raise ValueError("a Redis Cluster needs redis_url (a seed node)")
        self.keys = Keys(key_prefix, cluster=redis_cluster)
        embedded: Any = None
        if redis_url is None:
            import fakeredis

            embedded = fakeredis.FakeServer()
        self.embedded = redis_url is None
        # Redis client names may not contain spaces; the name only helps CLIENT LIST readers.
        name = "roomcast:" + re.sub(r"[^!-~]", "_", node_id)
        self.bus: Bus | ShardedBus
        pubsub_client: Any
        if redis_cluster:
            assert redis_url is not None
            seed = pubsub_url or redis_url
            key_client: Any = connect_cluster(redis_url, client_name=name)
            pubsub_client = connect_cluster(seed, client_name=name)
            self.bus = ShardedBus(
                pubsub_client,
                connect_node=lambda host, port: connect_node(seed, host, port, client_name=name),
                watchdog_channel=lambda salt: self.keys.shard_watchdog_channel(node_id, salt),
                watchdog_interval=watchdog_interval,
            )
        else:
            key_client = connect(redis_url, embedded, client_name=name)
            # Pub/sub gets a pool of its own even on the same server, so a subscriber
            # connection in trouble can never be handed to a key-store command.
            pubsub_client = (
                key_client if self.embedded else connect(pubsub_url or redis_url, client_name=name)
            )
            self.bus = Bus(
                pubsub_client,
                watchdog_channel=self.keys.watchdog_channel(node_id),
                watchdog_interval=watchdog_interval,
            )
        self.store = Store(key_client, self.keys, node_index=not self.embedded)
        # The history script publishes only where subscribers listen: on the key store
        # (on a Redis Cluster, to the room's shard channel, in the room's own slot).
        separate_pubsub = pubsub_url is not None and pubsub_url != redis_url
        publish = "SPUBLISH" if redis_cluster else "PUBLISH"
        #: Rooms' message histories, kept in the key store (embedded or real).
        self.history = HistoryStore(
            key_client, self.keys, publish_command="" if separate_pubsub else publish
        )
        self.rpc = Rpc(
            node_id=node_id,
            token=token,
            keys=self.keys,
            bus=self.bus,
            store=self.store,
            timeout=rpc_timeout,
            owns_connection=owns_connection,
            errors=errors,
        )
        self.presence = Presence(self.store, node_id, presence_ttl)
        # A rebuilt subscriber may mean Redis restarted empty: write our state again.
        self.bus.on_reconnect = self.presence.request_resync
        self._pubsub_client = pubsub_client

    def register(self, name: str, method: Any) -> None:
        """Make ``method`` callable from other nodes under ``name``."""
        self.rpc.register(name, method)

    async def call(self, method: str, *args: Any, connection_id: str) -> Any:
        """Run a registered method on the node that owns ``connection_id``."""
        return await self.rpc.call(method, *args, connection_id=connection_id)

    async def call_all(self, method: str, *args: Any) -> dict[str, Any]:
        """Run a registered method on every live node; results by node id."""
        return await self.rpc.call_all(method, *args)

    async def start(self) -> None:
        try:
            await self.store.ping()
        except REDIS_DOWN as error:
            log.error("Redis unreachable at start (%s); retrying in the background", error)
        await self.bus.start()
        await self.rpc.start()
        await self.presence.start()

    async def stop(self) -> None:
        await self.presence.stop()
        await self.rpc.stop()
        await self.bus.stop()
        with contextlib.suppress(Exception):
            await self.store.close()
        if self._pubsub_client is not self.store.redis:
            with contextlib.suppress(Exception):
                await self._pubsub_client.aclose()
