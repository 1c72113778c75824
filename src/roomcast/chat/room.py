"""The chat-room API (``api.chat_room``): rooms, members and messages across the cluster.

A ``say`` travels: verb -> :meth:`ChatRoom.broadcast` -> ``on_say_receive`` middleware ->
encoded once -> this node's members (via the :class:`RoomIndex`) and the room's pub/sub
channel -> every other node with members in the room -> their members.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from roomcast import jsonwire
from roomcast.chat.errors import (
    AlreadyInRoom,
    ChatError,
    ConnectionNotFound,
    InvalidRoomName,
    MessageTooLong,
    NotInRoom,
    RoomAndMessageRequired,
    RoomLimitReached,
    RoomNotFound,
    RoomRequired,
    RpcTimeout,
    TooManyRooms,
)
from roomcast.chat.history import HistoryPolicy, HistoryUnavailable, NoHistory, RoomHistory
from roomcast.chat.middleware import ChatMiddleware, ChatMiddlewareChain
from roomcast.chat.names import validate_room_name
from roomcast.chat.presence import is_event, join_event, leave_event
from roomcast.chat.room_index import RoomIndex
from roomcast.cluster.dropped import DropLog
from roomcast.cluster.envelope import EnvelopeError, derive_key, open_envelope, seal
from roomcast.cluster.errors import REDIS_DOWN
from roomcast.cluster.history import signed_header, split_position, with_position
from roomcast.config import LimitsSettings
from roomcast.limits import encoded_size_over
from roomcast.metrics import NodeStats

if TYPE_CHECKING:
    from roomcast.cluster import Cluster
    from roomcast.connection import Connection, Connections

log = logging.getLogger("roomcast.chat")

ROOM_DELETED = "this room has been deleted"
#: The epoch of the position an event carries on a history room's channel (offset 0:
#: no message has it, so it marks an event that is not kept).
EVENT_EPOCH = "event"
#: Characters of a display name (the ``name`` param) kept in member details.
DISPLAY_NAME_MAX = 64
#: Seconds a node trusts that a room it saw still exists (see ``ChatRoom._room_exists``).
ROOM_MEMORY = 1.0


def now_ms() -> int:
    return int(time.time() * 1000)


class ChatRoom:
    """Rooms and their members; every method that touches data is a coroutine.

    The three ``generate_*``/``sanitize_*`` methods are hooks: replace them on the instance
    or in a subclass to change what is stored, shown and sent.
    """

    def __init__(
        self,
        *,
        node_id: str,
        server_token: str,
        starting_rooms: Iterable[str],
        connections: Connections,
        cluster: Cluster,
        limits: LimitsSettings | None = None,
        stats: NodeStats | None = None,
        history: HistoryPolicy | None = None,
        presence_events: bool = False,
    ) -> None:
        self.node_id = node_id
        self.stats = stats or NodeStats()
        # Room names, rooms per connection, rooms in the cluster, message size.
        self._limits = limits or LimitsSettings()
        self.index = RoomIndex()
        self.middleware = ChatMiddlewareChain()
        self._starting_rooms = list(starting_rooms)
        self._connections = connections
        self._cluster = cluster
        self._keys = cluster.keys
        self._store = cluster.store
        self._bus = cluster.bus
        # The embedded store is this node's alone: no other node can hear a room's channel,
        # so a say is not published (it would only come back to us, to be dropped) and
        # room channels are not subscribed.
        self._publish = not cluster.embedded
        # What was stored for each local membership, so a resync writes it unchanged.
        self._details: dict[tuple[str, str], dict[str, Any]] = {}
        self._member_writes = _WriteGate()
        self._rooms_seen: dict[str, float] = {}  # room -> until when it is known to exist
        self._bus_key = derive_key(server_token)
        self._drops = DropLog(log, "chat message")
        #: Refuses a join by raising, before join middleware runs (the node's [auth]).
        self.join_check: Callable[[Connection, str], None] | None = None
        #: Rooms with history (None: no room keeps any, and nothing of it runs).
        self.history = (
            RoomHistory(history, cluster.history, self.index, self.middleware)
            if history is not None
            else None
        )
        self.presence_events = presence_events
        if presence_events:  # the reaping node tells the rooms of a dead node's members
            cluster.presence.on_reaped = self._on_reaped

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        cluster = self._cluster
        cluster.register("chat.add_member", self._rpc_add_member)
        cluster.register("chat.remove_member", self._rpc_remove_member)
        cluster.register("chat.evict_room", self._rpc_evict_room)
        cluster.presence.on_resync = self.resync
        for room in self._starting_rooms:
            try:
                await self.add(room)
            except (ChatError, *REDIS_DOWN) as error:
                log.error("could not create starting room %s: %s", room, error)

    async def resync(self) -> None:
        """Make Redis hold this node's rooms and members again (after an outage or a reap).

        Memberships Redis lost are written again; ones this node dropped while Redis was
        unreachable are removed. The presence loop runs this, one at a time.
        """
        # No membership write may run while the index is read and Redis rewritten, or a
        # leave could be undone (or a join deleted) by this snapshot.
        async with self._member_writes.closed():
            rooms = set(self._starting_rooms) | set(self.index.rooms())
            if self.history is not None:
                rooms |= set(self.history.recovering)
            members: dict[tuple[str, str], dict[str, Any]] = {}
            for room in rooms:
                for connection in self._local_members(room):
                    details = self._details.get((room, connection.id))
                    if details is None:
                        details = self.generate_member_details(connection)
                    members[(connection.id, room)] = details
            stale = await self._store.reconcile_node(self.node_id, rooms, members)
        log.info(
            "wrote %d rooms and %d memberships to Redis again; removed %d stale",
            len(rooms),
            len(members),
            stale,
        )

    def _store_failed(self, what: str, error: Exception) -> None:
        """A write to Redis failed: chat goes on locally, presence resyncs when it can."""
        log.warning("%s: %s; will write it when Redis is back", what, error)
        self._cluster.presence.request_resync()

    # middleware --------------------------------------------------------------------------

    def add_middleware(self, middleware: ChatMiddleware) -> None:
        """Install chat middleware; one with the same name is replaced."""
        self.middleware.add(middleware)

    def remove_middleware(self, name: str) -> None:
        self.middleware.remove(name)

    # hooks -------------------------------------------------------------------------------

    def generate_member_details(self, connection: Connection) -> dict[str, Any]:
        """What is stored for a member; default ``{"id", "joinedAt", "host"}``, plus
        ``name`` when the connection has a ``name`` param (a display name)."""
        details = {"id": connection.id, "joinedAt": now_ms(), "host": self.node_id}
        name = connection.params.get("name")
        if isinstance(name, str) and name:
            details["name"] = name[:DISPLAY_NAME_MAX]
        return details

    def sanitize_member_details(self, data: dict[str, Any]) -> dict[str, Any]:
        """What ``room_status`` shows of a stored member (``joinedAt``, and ``name`` when
        one was stored); ``id`` is filled in afterwards."""
        shown = {"joinedAt": data.get("joinedAt")}
        if "name" in data:
            shown["name"] = data["name"]
        return shown

    def generate_message_payload(self, message: dict[str, Any]) -> dict[str, Any]:
        """What clients receive; ``message`` is ``{"message", "sentAt", "connection"}``."""
        return {
            "message": message["message"],
            "room": message["connection"]["room"],
            "from": message["connection"]["id"],
            "context": "user",
            "sentAt": message["sentAt"],
        }

    # rooms -------------------------------------------------------------------------------

    async def list(self) -> list[str]:
        return await self._store.list_rooms()

    async def count(self) -> int:
        """How many rooms the cluster has (one Redis command, whatever the number)."""
        return await self._store.count_rooms()

    async def add(self, room: str) -> int:
        """Create ``room``: 1 when created, 0 when it already existed.

        Raises :class:`RoomLimitReached` when a new room would make more than
        ``max_rooms`` (concurrent creations racing for the last places may pass it by
        a few; the limit guards memory, not an exact count).
        """
        validate_room_name(room, self._limits.room_name_max_length)
        max_rooms = self._limits.max_rooms
        if not max_rooms:
            return await self._store.add_room(room)
        added = await self._store.add_room_below(room, max_rooms)
        if added is None:
            raise RoomLimitReached(max_rooms)
        return added

    async def exists(self, room: str) -> bool:
        return await self._store.room_exists(room)

    async def destroy(self, room: str) -> None:
        """Tell the room's members it is gone, remove them on every node, delete it."""
        if not room or not await self._store.room_exists(room):
            raise RoomNotFound()
        try:
            await self.broadcast({}, room, ROOM_DELETED)
        except InvalidRoomName:  # made before the name limits (or by a laxer node): still goes
            log.warning("could not tell the members of %r that it is deleted", room)
        try:
            await self._cluster.call_all("chat.evict_room", room)
        except RpcTimeout:  # a node that died a moment ago; presence reaps its members
            log.warning("a node did not confirm the eviction from %s", room)
        except Exception as error:  # the room still goes: members left behind are stale
            log.warning("eviction from %s failed on a node: %s", room, error)
        finally:
            self._rooms_seen.pop(room, None)
            await self._store.remove_room(room)
            if self.history is not None and self.history.keeps(room):
                await self._cluster.history.drop(room)

    async def _room_exists(self, room: str, remembered: bool = True) -> bool:
        """``exists`` for joins and leaves: the checks of one loop tick go to Redis as one
        command with the membership writes, and a join may trust a room seen less than
        ``ROOM_MEMORY`` s ago.

        A burst of joins and leaves, to one room or many, then costs one Redis round trip
        per batch, not one each. Destroying a room forgets it on every node
        (``chat.evict_room`` runs on each), so the memory only matters for a join racing a
        destroy. Leaves always ask Redis.
        """
        now = time.monotonic()
        if remembered and self._rooms_seen.get(room, 0.0) > now:
            return True
        if not await self._store.room_check(room):
            return False
        if len(self._rooms_seen) > 10_000:
            self._rooms_seen = {r: t for r, t in self._rooms_seen.items() if t > now}
        self._rooms_seen[room] = now + ROOM_MEMORY
        return True

    async def room_status(self, room: str) -> dict[str, Any]:
        if not room:
            raise RoomRequired()
        if not await self._store.room_exists(room):
            raise RoomNotFound()
        members: dict[str, dict[str, Any]] = {}
        for member_id, details in (await self._store.room_members(room)).items():
            shown = self.sanitize_member_details(details)
            shown["id"] = member_id
            members[member_id] = shown
        return {"room": room, "membersCount": len(members), "members": members}

    # members -----------------------------------------------------------------------------

    async def add_member(self, connection_id: str, room: str) -> bool:
        """Add a connection of any node to ``room``; True, or the owning node's error."""
        validate_room_name(room, self._limits.room_name_max_length)
        connection = self._connections.get(connection_id)
        if connection is None:
            result = await self._cluster.call(
                "chat.add_member", connection_id, room, connection_id=connection_id
            )
            return bool(result)
        return await self._add_local_member(connection, room)

    async def remove_member(self, connection_id: str, room: str) -> bool:
        """Remove a connection of any node from ``room``; True, or the owning node's error."""
        connection = self._connections.get(connection_id)
        if connection is None:
            result = await self._cluster.call(
                "chat.remove_member", connection_id, room, connection_id=connection_id
            )
            return bool(result)
        return await self._remove_local_member(connection, room)

    async def recover_member(
        self, connection: Connection, room: str, since: int, epoch: str
    ) -> dict[str, Any] | bool:
        """Join a connection of this node to ``room``, replaying what it missed after
        offset ``since`` of ``epoch``; return ``{"recovered", "epoch", "offset"}``.

        The replay is written after the caller's current step: write the reply first
        (before awaiting anything). A room without history is joined as by
        :meth:`add_member` (True). If the history cannot be read the join is undone and
        the error raised.
        """
        validate_room_name(room, self._limits.room_name_max_length)
        if self.history is None or not self.history.keeps(room):
            return await self._add_local_member(connection, room)
        await self._add_local_member(connection, room, recovering=True)
        return await self._recover(connection, room, since, epoch)

    async def room_history(
        self, connection: Connection, room: str, since: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        """``{"room", "epoch", "offset", "messages"}``: the kept messages after ``since``
        (at most ``limit``, oldest first). Raises ``NoHistory`` for a room without."""
        if self.history is None:
            raise NoHistory(room)
        return await self.history.read(connection, room, since, limit)

    async def _add_local_member(
        self, connection: Connection, room: str, recovering: bool = False
    ) -> bool:
        """Join ``room`` (a name already validated); checks and awaits, then records it."""
        if room in connection.rooms:
            raise AlreadyInRoom(room)
        max_rooms = self._limits.max_rooms_per_connection
        if max_rooms and len(connection.rooms) >= max_rooms:
            raise TooManyRooms(max_rooms)
        # A room seen less than ROOM_MEMORY s ago is trusted without a call (a burst of
        # joins); otherwise _room_exists asks Redis.
        if self._rooms_seen.get(room, 0.0) <= time.monotonic() and not await self._room_exists(
            room
        ):
            raise RoomNotFound()
        if self.join_check is not None:
            self.join_check(connection, room)
        if self.middleware.join:
            await self.middleware.run_join(connection, room)
        # The awaits above let other work run: the connection may have started closing
        # (its rooms are being left from a snapshot that lacks this one), or a concurrent
        # join of the same room may have won.
        if not connection.open:
            raise ConnectionNotFound()
        if room in connection.rooms:
            raise AlreadyInRoom(room)
        if max_rooms and len(connection.rooms) >= max_rooms:
            raise TooManyRooms(max_rooms)  # concurrent joins filled the last places
        connection.rooms.append(room)
        if not recovering:
            self.index.add(room, connection)
        elif self.history is not None:  # in the index once its replay is done
            self.history.collect(room, connection.id)
        details = self.generate_member_details(connection)
        self._details[(room, connection.id)] = details
        if (self._publish or recovering or self._keeps_history(room)) and not self._bus.settled(
            self._keys.room_channel(room), True
        ):
            await self._sync_subscription(room)
        gate = self._member_writes
        if not gate.enter_now():
            await gate.enter()
        try:
            await self._store.add_member(room, connection.id, self.node_id, details)
            if room not in connection.rooms:  # left (or closed) while the write was queued
                await self._store.remove_member(room, connection.id, self.node_id)
        except REDIS_DOWN as error:
            self._store_failed(f"member {connection.id} of {room} not stored", error)
        finally:
            gate.leave()
        self.stats.joins += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s joined %s", connection.id, room)
        if self.presence_events:
            shown = self.sanitize_member_details(details)
            shown["id"] = connection.id
            await self._announce(room, join_event(room, connection.id, shown, now_ms()))
        return True

    async def _recover(
        self, connection: Connection, room: str, since: int, epoch: str
    ) -> dict[str, Any]:
        assert self.history is not None
        channel = self._keys.room_channel(room)
        try:
            return await self.history.recover(
                connection, room, since, epoch, lambda: self._bus.confirmed(channel)
            )
        except REDIS_DOWN as error:
            log.warning("history of %s unreadable for %s: %s", room, connection.id, error)
            await self._undo_join(connection, room)
            raise HistoryUnavailable(room) from error
        except BaseException:
            await self._undo_join(connection, room)
            raise

    async def _undo_join(self, connection: Connection, room: str) -> None:
        if room in connection.rooms:
            await self.forget_local_member(connection, room)

    async def _remove_local_member(self, connection: Connection, room: str) -> bool:
        if not room:
            raise RoomRequired()
        if room not in connection.rooms:
            raise NotInRoom(room)
        if not await self._room_exists(room, remembered=False):
            raise RoomNotFound()
        await self.middleware.run_leave(connection, room)
        if room not in connection.rooms:
            raise NotInRoom(room)
        await self.forget_local_member(connection, room)
        return True

    async def forget_local_member(self, connection: Connection, room: str) -> None:
        """Drop a membership without asking middleware (used when a connection closes)."""
        with contextlib.suppress(ValueError):
            connection.rooms.remove(room)
        self.index.remove(room, connection.id)
        if self.history is not None and self.history.recovering:
            self.history.forget(room, connection.id)
        self._details.pop((room, connection.id), None)
        await self._sync_subscription(room)
        gate = self._member_writes
        if not gate.enter_now():
            await gate.enter()
        try:
            await self._store.remove_member(room, connection.id, self.node_id)
        except REDIS_DOWN as error:
            self._store_failed(f"member {connection.id} of {room} not removed", error)
        finally:
            gate.leave()
        self.stats.leaves += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s left %s", connection.id, room)
        if self.presence_events:
            await self._announce(room, leave_event(room, connection.id, now_ms()))

    async def leave_all(self, connection: Connection) -> None:
        """Take a closing connection out of every room; leave middleware runs but can't refuse.

        However many rooms it was in, the store gets one batched write and the bus one
        unsubscribe (for the rooms it was this node's last member of).
        """
        rooms = list(connection.rooms)
        if not rooms:
            return
        if self.middleware.leave:
            for room in rooms:
                try:
                    await self.middleware.run_leave(connection, room)
                except Exception as error:
                    log.debug(
                        "leave middleware on close of %s in %s: %s", connection.id, room, error
                    )
        emptied: dict[str, str] = {}  # channel -> room, for rooms with no local member left
        kept: list[str] = []  # emptied rooms with history: their channel is synced alone
        connection.rooms.remove_all(rooms)
        history = self.history
        for room in rooms:
            self._details.pop((room, connection.id), None)
            if history is not None and history.recovering:
                history.forget(room, connection.id)
            if self.index.remove(room, connection.id):
                if self._keeps_history(room):
                    kept.append(room)
                else:
                    emptied[self._keys.room_channel(room)] = room
        for room in kept:
            await self._sync_subscription(room)
        if emptied and self._publish:
            await self._bus.release(
                list(emptied), lambda channel: self.index.has_members(emptied[channel])
            )
        gate = self._member_writes
        if not gate.enter_now():
            await gate.enter()
        try:
            await self._store.remove_memberships(connection.id, self.node_id, rooms)
        except REDIS_DOWN as error:
            self._store_failed(f"{len(rooms)} memberships of {connection.id} not removed", error)
        finally:
            gate.leave()
        self.stats.leaves += len(rooms)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s left %s", connection.id, ", ".join(rooms))
        if self.presence_events:
            at = now_ms()
            for room in rooms:
                await self._announce(room, leave_event(room, connection.id, at))

    async def _sync_subscription(self, room: str) -> None:
        history = self.history
        if history is not None and history.keeps(room):
            await self._bus.sync(
                self._keys.room_channel(room),
                self._on_history_message,
                lambda: self.index.has_members(room) or history.is_recovering(room),
            )
            return
        if not self._publish:  # nothing else is ever published on the embedded store
            return
        await self._bus.sync(
            self._keys.room_channel(room),
            self._on_room_message,
            lambda: self.index.has_members(room),
        )

    async def _rpc_add_member(self, connection_id: str, room: str) -> bool:
        validate_room_name(room, self._limits.room_name_max_length)  # the caller may differ
        return await self._add_local_member(self._local_connection(connection_id), room)

    async def _rpc_remove_member(self, connection_id: str, room: str) -> bool:
        return await self._remove_local_member(self._local_connection(connection_id), room)

    def _keeps_history(self, room: str) -> bool:
        return self.history is not None and self.history.keeps(room)

    def _local_connection(self, connection_id: str) -> Connection:
        connection = self._connections.get(connection_id)
        if connection is None or not connection.open:  # it left after the owner check
            raise ConnectionNotFound()
        return connection

    def _local_members(self, room: str) -> Sequence[Connection]:
        """This node's members of ``room``: the index's, and those still recovering."""
        members = self.index.members(room)
        if self.history is not None and self.history.is_recovering(room):
            for connection_id in self.history.recovering[room]:
                connection = self._connections.get(connection_id)
                if connection is not None:
                    members.append(connection)
        return members

    async def _rpc_evict_room(self, room: str) -> int:
        members = self._local_members(room)
        for connection in members:
            try:
                await self._remove_local_member(connection, room)
            except ChatError:
                await self.forget_local_member(connection, room)
        self._rooms_seen.pop(room, None)
        return len(members)

    # messages ----------------------------------------------------------------------------

    async def broadcast(self, connection: Any, room: str, message: Any) -> None:
        """Send ``message`` from ``connection`` (real or mock) to every member of ``room``.

        Raises :class:`MessageTooLong` when the message, JSON-encoded, is over
        ``max_message_length`` (checked before any middleware runs), or when the payload
        ``on_say_receive`` middleware returns has grown past it.
        """
        if not room or message is None or message == "":
            raise RoomAndMessageRequired()
        limits = self._limits
        validate_room_name(room, limits.room_name_max_length)
        rooms = _field(connection, "rooms")
        if rooms is not None and room not in rooms:
            raise NotInRoom(room)
        max_length = limits.max_message_length
        if max_length:
            size = encoded_size_over(message, max_length)
            if size is not None:
                raise MessageTooLong(size, max_length)
        sender = _field(connection, "id")
        if sender is None:
            sender = 0
            _set_field(connection, "id", 0)
        envelope = {
            "message": message,
            "sentAt": now_ms(),
            "connection": {"id": sender, "room": room},
        }
        payload = self.generate_message_payload(envelope)
        if not self.middleware.on_say_receive:
            data = jsonwire.dumps(payload)
        elif not max_length:
            payload = await self.middleware.run_on_say_receive(connection, room, payload)
            data = jsonwire.dumps(payload)
        else:
            # What the payload adds around its message (its encoding with an empty
            # message, less the 2 bytes of ""): whatever the middleware's payload encodes
            # to beyond that counts as message.
            shell = dict(payload)
            if "message" in shell:
                shell["message"] = ""
            frame_size = len(jsonwire.dumps(shell)) - (2 if "message" in shell else 0)
            payload = await self.middleware.run_on_say_receive(connection, room, payload)
            data = jsonwire.dumps(payload)
            if len(data) - frame_size > max_length:
                raise MessageTooLong(len(data) - frame_size, max_length)
        self.stats.messages_received += 1
        history = self.history
        if history is not None and history.keeps(room):
            await self._broadcast_kept(history, room, payload, data)
            return
        await self.deliver_local(room, payload, data)
        if self._publish:
            channel = self._keys.room_channel(room)
            try:
                sealed = seal(self._bus_key, self.node_id, data, channel=channel.encode())
            except EnvelopeError:
                log.warning("a %d-byte message to %s is too large for other nodes", len(data), room)
                return
            await self._bus.publish(channel, sealed)

    async def _broadcast_kept(
        self, history: RoomHistory, room: str, payload: Any, data: bytes
    ) -> None:
        """Keep and publish a message of a room with history; every node, this one too,
        delivers it from the room's channel, so all deliver a room's messages in order."""
        channel = self._keys.room_channel(room)
        try:
            header = signed_header(self._bus_key, self.node_id, data, channel=channel)
        except EnvelopeError:
            log.warning("a %d-byte message to %s is too large to keep", len(data), room)
            await self.deliver_local(room, payload, data)
            return
        try:
            offset, epoch = await history.append(room, header, data)
        except REDIS_DOWN as error:  # chat goes on here, without a position
            log.warning("message in %s not kept (%s); delivered on this node only", room, error)
            await self.deliver_local(room, payload, data)
            return
        if not history.publishes:  # pub/sub is another Redis: publish it ourselves
            await self._bus.publish(channel, header + with_position(data, offset, epoch))

    async def _announce(self, room: str, event: dict[str, Any]) -> None:
        """Send a presence event to every member of ``room`` on every node."""
        data = jsonwire.dumps(event)
        channel = self._keys.room_channel(room)
        if self.history is not None and self.history.keeps(room):
            # Like the room's messages, it reaches this node's members from the channel,
            # carrying the room's current position so the signature check passes there.
            await self._bus.publish(channel, self._positioned_envelope(channel, data))
            return
        await self.deliver_local(room, event, data)
        if self._publish:
            await self._bus.publish(
                channel, seal(self._bus_key, self.node_id, data, channel=channel.encode())
            )

    def _positioned_envelope(self, channel: str, data: bytes) -> bytes:
        """A signed event for a history room's channel, with the zero position suffix that
        messages there carry (events are not kept and take no offset)."""
        header = signed_header(self._bus_key, self.node_id, data, channel=channel)
        return header + with_position(data, 0, EVENT_EPOCH)

    async def _on_reaped(self, entries: set[tuple[str, str]]) -> None:
        """A dead node's memberships were removed here: tell each room who left."""
        at = now_ms()
        for connection_id, room in sorted(entries):
            await self._announce(room, leave_event(room, connection_id, at))

    async def _on_history_message(self, channel: str, data: bytes) -> None:
        """A message of a room with history, from any node (this one included).

        Its signature covers the message as said; the history script added its position
        (``"offset"``, ``"epoch"``) after signing, so that suffix is taken off to verify.
        """
        header, newline, body = data.partition(b"\n")
        said = split_position(body) if newline else None
        if said is None:
            self._drops.drop("no position in a room with history", channel)
            return
        try:
            open_envelope(self._bus_key, header + b"\n" + said[0], channel=channel.encode())
        except EnvelopeError as error:
            self._drops.drop(error.reason, channel)
            return
        if b"\r" in body or not body.startswith(b"{"):
            self._drops.drop("not a JSON object", channel)
            return
        room = self._keys.room_of_channel(channel)
        if said[1] == 0:  # an event (presence): not kept, delivered as it was said
            await self.deliver_local(room, None, said[0])
            return
        history = self.history
        if history is not None and history.recovering:
            # Connections recovering in the room get it after their replay.
            for buffer in history.recovering.get(room, {}).values():
                buffer.append(body)
        await self.deliver_local(room, None, body)

    async def _on_room_message(self, channel: str, data: bytes) -> None:
        try:
            opened = open_envelope(self._bus_key, data, channel=channel.encode())
        except EnvelopeError as error:
            self._drops.drop(error.reason, channel)
            return
        if opened.sender == self.node_id:
            return  # delivered locally when it was said
        body = opened.body
        # Clients get these bytes as they are: only one compact JSON object may pass (a raw
        # line break, which compact JSON never has, would split a TCP client's line).
        payload: Any = None
        if b"\n" not in body and b"\r" not in body:
            with contextlib.suppress(ValueError):
                payload = jsonwire.loads(body)
        if not isinstance(payload, dict):
            self._drops.drop(f"not a JSON object from {opened.sender}", channel)
            return
        room = self._keys.room_of_channel(channel)
        await self.deliver_local(room, payload, body)

    async def deliver_local(self, room: str, payload: dict[str, Any] | None, data: bytes) -> int:
        """Send an encoded chat message to this node's members of ``room``; return the count.

        Without ``say`` middleware the bytes are framed once per transport kind and the
        same frame goes to every member.
        """
        members = self.index.members(room)
        if not members:
            return 0
        frames: dict[str, Any] = {}
        say = self.middleware.say
        if say:
            if payload is None:
                payload = jsonwire.loads(data)
            if is_event(payload):  # presence events are not says: no say middleware
                say = []
        if not say:
            # Consecutive members mostly share a transport kind: look its frame up only
            # when the kind changes (this loop runs once per member per message).
            framing: str | None = None
            frame: Any = None
            for connection in members:
                if connection.framing != framing:
                    framing = connection.framing
                    frame = frames.get(framing)
                    if frame is None:
                        frame = frames[framing] = connection.frame(data)
                connection.write_frame(frame)
            self.stats.deliveries += len(members)
            return len(members)
        assert payload is not None
        sent = 0
        for connection in members:
            if connection.destroyed:
                continue
            personal = await self.middleware.run_say(connection, room, payload)
            if personal is None:
                continue
            if personal == payload:
                frame = frames.get(connection.framing)
                if frame is None:
                    frame = frames[connection.framing] = connection.frame(data)
            else:
                frame = connection.frame(jsonwire.dumps(personal))
            connection.write_frame(frame)
            sent += 1
        self.stats.deliveries += sent
        return sent


class _WriteGate:
    """Many membership writes at once, or one resync alone.

    Writes pass while the gate is open; ``closed()`` waits for the writes in flight to
    finish and holds new ones back until the resync is done. A write is bracketed by
    ``enter_now()`` (or, when that returns False, ``await enter()``) and ``leave()``:
    plain calls, as a membership write is on every join's path.
    """

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0
        self._lock = asyncio.Lock()

    def enter_now(self) -> bool:
        """Start a write if the gate is open; False when it is closed (await ``enter``)."""
        if not self._open.is_set():
            return False
        if not self._in_flight:
            self._idle.clear()
        self._in_flight += 1
        return True

    async def enter(self) -> None:
        """Start a write, waiting while a resync holds the gate closed."""
        while not self.enter_now():
            await self._open.wait()

    def leave(self) -> None:
        """End a write started by ``enter_now`` or ``enter``."""
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def closed(self) -> AsyncIterator[None]:
        async with self._lock:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _set_field(obj: Any, name: str, value: Any) -> None:
    """Give a mock connection its id 0 where it can take one (ActionHero does the same)."""
    with contextlib.suppress(Exception):
        if isinstance(obj, MutableMapping):
            obj[name] = value
        elif not isinstance(obj, Mapping):
            setattr(obj, name, value)
