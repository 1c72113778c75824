"""Names of every Redis key and pub/sub channel roomcast uses, under one prefix.

Every name is built by :meth:`Keys.room_key` (data of one room), :meth:`Keys.node_key`
(data of one node) or :meth:`Keys.global_key`, so a different layout (a Redis Cluster's
hash tags, say) changes those three and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "roomcast:"

    # layout ------------------------------------------------------------------------------

    def room_key(self, kind: str, room: str) -> str:
        """A key or channel holding ``kind`` data of ``room``."""
        return f"{self.prefix}{kind}:{room}"

    def node_key(self, kind: str, node_id: str) -> str:
        """A key or channel holding ``kind`` data of node ``node_id``."""
        return f"{self.prefix}{kind}:{node_id}"

    def global_key(self, kind: str) -> str:
        """A key or channel of the whole cluster."""
        return f"{self.prefix}{kind}"

    # keys --------------------------------------------------------------------------------

    @property
    def rooms(self) -> str:
        """Set of room names."""
        return self.global_key("rooms")

    def members(self, room: str) -> str:
        """Hash: connection id -> JSON member details."""
        return self.room_key("members", room)

    def history(self, room: str) -> str:
        """List: the room's last messages, oldest first, each as clients receive it (the
        newest one's offset and epoch are the room's)."""
        return self.room_key("history", room)

    @property
    def nodes(self) -> str:
        """Set of node ids that have announced themselves."""
        return self.global_key("nodes")

    def heartbeat(self, node_id: str) -> str:
        """String key with a TTL; it exists while the node is alive."""
        return self.node_key("heartbeat", node_id)

    def node_members(self, node_id: str) -> str:
        """Set of "<connection id> <room>" entries a node owns, for reaping after a crash."""
        return self.node_key("node-members", node_id)

    def reap_lock(self, node_id: str) -> str:
        return self.node_key("reap-lock", node_id)

    # channels ----------------------------------------------------------------------------

    def room_channel(self, room: str) -> str:
        """Pub/sub channel carrying chat messages of one room."""
        return self.room_key("chat", room)

    def room_of_channel(self, channel: str) -> str:
        """The room whose :meth:`room_channel` is ``channel``."""
        return channel[len(self.room_key("chat", "")) :]

    @property
    def rpc_channel(self) -> str:
        """Pub/sub channel every node listens to for RPC requests."""
        return self.global_key("rpc")

    def node_channel(self, node_id: str) -> str:
        """Pub/sub channel of one node: the replies to its RPC calls."""
        return self.node_key("node", node_id)

    def watchdog_channel(self, node_id: str) -> str:
        """Pub/sub channel a node pings itself on to prove its subscriber still hears."""
        return self.node_key("watchdog", node_id)
