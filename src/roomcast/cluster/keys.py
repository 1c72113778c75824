"""Names of every Redis key and pub/sub channel roomcast uses, under one prefix.

Every name is built by :meth:`Keys.room_key` (data of one room), :meth:`Keys.node_key`
(data of one node) or :meth:`Keys.global_key`, so a layout differs in those three only.

On one Redis a name is ``<prefix><kind>:<room or node>``. On a Redis Cluster
(``cluster=True``) the room or node is a hash tag, ``<prefix><kind>:{<room or node>}``:
every key of one room and the room's channel share one hash slot (so one shard holds
them, and a script may touch them together), and a node's keys share the node's slot.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Tag of the names whose room or node begins with "}": ``{}`` is no hash tag to Redis,
#: which would hash each such name whole, spreading one room over several slots.
_BRACE_TAG = "~{~}"


@dataclass(frozen=True)
class Keys:
    prefix: str = "roomcast:"
    #: Hash-tagged names, for a Redis Cluster.
    cluster: bool = False

    def __post_init__(self) -> None:
        if self.cluster and ("{" in self.prefix or "}" in self.prefix):
            # A brace in the prefix would become the hash tag of every name.
            raise ValueError(f"a Redis Cluster key prefix may not contain braces: {self.prefix!r}")

    # layout ------------------------------------------------------------------------------

    def room_key(self, kind: str, room: str) -> str:
        """A key or channel holding ``kind`` data of ``room``."""
        if self.cluster:
            return self._tagged(kind, room)
        return f"{self.prefix}{kind}:{room}"

    def node_key(self, kind: str, node_id: str) -> str:
        """A key or channel holding ``kind`` data of node ``node_id``."""
        if self.cluster:
            return self._tagged(kind, node_id)
        return f"{self.prefix}{kind}:{node_id}"

    def global_key(self, kind: str) -> str:
        """A key or channel of the whole cluster."""
        return f"{self.prefix}{kind}"

    def _tagged(self, kind: str, name: str) -> str:
        # Redis hashes what lies between the first "{" and the first "}" after it: with
        # no brace in the prefix or kind, that is ``name`` up to its first "}" (never
        # empty, see _BRACE_TAG), the same for every kind of one name.
        if name.startswith("}"):
            return f"{self.prefix}{kind}:{_BRACE_TAG}{name}"
        return f"{self.prefix}{kind}:{{{name}}}"

    def _untagged(self, kind: str, key: str) -> str:
        """The room or node :meth:`_tagged` put into ``key``."""
        rest = key[len(self.prefix) + len(kind) + 1 :]
        if rest.startswith(_BRACE_TAG):
            return rest[len(_BRACE_TAG) :]
        return rest[1:-1]

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
        if self.cluster:
            return self._untagged("chat", channel)
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

    def shard_watchdog_channel(self, node_id: str, salt: int) -> str:
        """One of a node's watchdog channels on a Redis Cluster, one per shard it listens
        to: ``salt`` changes the hash slot, so some salt lands the channel on any shard."""
        return self.node_key("probe", f"{salt}:{node_id}")
