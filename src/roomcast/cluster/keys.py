"""Names of every Redis key and pub/sub channel roomcast uses, under one prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "roomcast:"

    @property
    def rooms(self) -> str:
        """Set of room names."""
        return f"{self.prefix}rooms"

    def members(self, room: str) -> str:
        """Hash: connection id -> JSON member details."""
        return f"{self.prefix}members:{room}"

    @property
    def nodes(self) -> str:
        """Set of node ids that have announced themselves."""
        return f"{self.prefix}nodes"

    def heartbeat(self, node_id: str) -> str:
        """String key with a TTL; it exists while the node is alive."""
        return f"{self.prefix}heartbeat:{node_id}"

    def node_members(self, node_id: str) -> str:
        """Set of "<connection id> <room>" entries a node owns, for reaping after a crash."""
        return f"{self.prefix}node-members:{node_id}"

    def reap_lock(self, node_id: str) -> str:
        return f"{self.prefix}reap-lock:{node_id}"

    def room_channel(self, room: str) -> str:
        """Pub/sub channel carrying chat messages of one room."""
        return f"{self.prefix}chat:{room}"

    @property
    def rpc_channel(self) -> str:
        """Pub/sub channel every node listens to for RPC requests."""
        return f"{self.prefix}rpc"

    def node_channel(self, node_id: str) -> str:
        """Pub/sub channel of one node: the replies to its RPC calls."""
        return f"{self.prefix}node:{node_id}"

    def watchdog_channel(self, node_id: str) -> str:
        """Pub/sub channel a node pings itself on to prove its subscriber still hears."""
        return f"{self.prefix}watchdog:{node_id}"
