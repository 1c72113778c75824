"""Connections: one object per client, whatever transport carries it."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, SupportsIndex

from roomcast import jsonwire
from roomcast.hooks import call_hook
from roomcast.limits import TokenBucket
from roomcast.protocol import replies

if TYPE_CHECKING:
    from roomcast.api import Api

log = logging.getLogger("roomcast.connections")

# The variant nibble of a UUID is 10xx in binary: map any hex digit onto 8, 9, a or b.
_VARIANT = dict(zip("0123456789abcdef", "89ab89ab89ab89ab", strict=True))


def new_id() -> str:
    """A random UUID4 string, like ``str(uuid.uuid4())`` at about a quarter of the cost.

    The same randomness (16 bytes of ``os.urandom`` with the version and variant bits
    set); it only skips building a ``uuid.UUID`` object, most of ``uuid4()``'s cost.
    """
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


class ConnectionState(enum.Enum):
    """Where a connection is in its life; only :class:`Connections` moves it on.

    ``CONNECTING``: create middleware runs, nothing is answered yet. ``OPEN``: registered,
    requests are answered. ``CLOSING``: destroy middleware and room leaves run; no new
    join may start. ``CLOSED``: forgotten and its transport closed.
    """

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


CONNECTING, OPEN, CLOSING, CLOSED = (
    ConnectionState.CONNECTING,
    ConnectionState.OPEN,
    ConnectionState.CLOSING,
    ConnectionState.CLOSED,
)


class ConnectionRefused(Exception):
    """Create middleware refused a connection; ``str()`` is its message for the client."""


class JoinedRooms(list[str]):
    """The rooms a connection is in, in join order: a ``list`` with O(1) membership tests.

    It is a real list (JSON-encodes, compares, indexes and slices as one), holding each
    room once: appending a room already there changes nothing. Past ``SMALL`` rooms it
    keeps an index beside the list, so ``room in rooms`` stays O(1) for a connection in
    thousands of rooms while the common connection in a few pays no more than a list.
    """

    __slots__ = ("_index",)
    #: Up to this many rooms, a scan of the list is as quick as a lookup in an index.
    SMALL = 8

    def __init__(self, rooms: Iterable[str] = ()) -> None:
        # list.__new__ made the list empty already: list.__init__ has nothing to do
        self._index: dict[str, None] | None = None
        if rooms:
            self.extend(rooms)

    def __contains__(self, room: object) -> bool:
        index = self._index
        return list.__contains__(self, room) if index is None else room in index

    def append(self, room: str) -> None:
        """Add ``room`` last, unless it is there already."""
        index = self._index
        if index is not None:
            if room not in index:
                list.append(self, room)
                index[room] = None
        elif not list.__contains__(self, room):
            list.append(self, room)
            if len(self) > self.SMALL:
                self._index = dict.fromkeys(self)

    def extend(self, rooms: Iterable[str]) -> None:
        for room in rooms:
            self.append(room)

    def __iadd__(self, rooms: Iterable[str]) -> JoinedRooms:  # type: ignore[override,misc]
        self.extend(rooms)
        return self

    def insert(self, position: SupportsIndex, room: str) -> None:
        if room not in self:
            list.insert(self, position, room)
            self._reindex()

    def remove(self, room: str) -> None:
        """Take ``room`` out; raises ``ValueError`` when it is not there, like a list."""
        list.remove(self, room)
        if self._index is not None:
            del self._index[room]

    def discard(self, room: str) -> None:
        """Take ``room`` out if it is there."""
        if room in self:
            self.remove(room)

    def remove_all(self, rooms: Iterable[str]) -> None:
        """Take every room of ``rooms`` out at once (O(n), not O(n) per room)."""
        gone = set(rooms)
        self[:] = [room for room in self if room not in gone]

    def pop(self, position: SupportsIndex = -1) -> str:
        room = list.pop(self, position)
        if self._index is not None:
            del self._index[room]
        return room

    def clear(self) -> None:
        list.clear(self)
        self._index = None

    def __setitem__(self, key: Any, value: Any) -> None:
        list.__setitem__(self, key, value)
        self._reindex()

    def __delitem__(self, key: Any) -> None:
        list.__delitem__(self, key)
        self._reindex()

    def _reindex(self) -> None:
        self._index = dict.fromkeys(self) if len(self) > self.SMALL else None


class Connection:
    """A client of this node.

    Transports subclass it and provide :meth:`frame`, :meth:`write_frame` and
    :meth:`close_transport`. ``framing`` names the wire encoding, so a chat message is
    framed once per kind of transport and the same bytes go to every member.

    ``state`` is the connection's place in its life (:class:`ConnectionState`); code that
    awaits on a connection's behalf checks it again afterwards, because the client may
    have gone meanwhile.
    """

    # Slots keep the core fields compact; "__dict__" still lets code set its own
    # attributes on a connection (ActionHero apps mark connections that way).
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_action_bucket",
        "_say_bucket",
        "_tasks",
        "api",
        "connected_at",
        "fingerprint",
        "id",
        "message_count",
        "params",
        "pending_actions",
        "remote_ip",
        "remote_port",
        "rooms",
        "state",
        "total_actions",
    )
    type: str = "test"
    framing: str = "json"
    can_chat: bool = True
    # Set per instance (in its __dict__) only once a token is accepted: an idle
    # connection without one pays nothing for them.
    #: The ``sub`` claim of the token this client presented, or None.
    user: str | None = None
    #: Every claim of that token, or None.
    claims: dict[str, Any] | None = None

    def __init__(
        self,
        api: Api,
        *,
        remote_ip: str = "127.0.0.1",
        remote_port: int = 0,
        id: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.api = api
        self.id: str = id or new_id()
        self.fingerprint: str = fingerprint or self.id
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.connected_at: int = int(time.time() * 1000)
        self.rooms = JoinedRooms()
        self.params: dict[str, Any] = {}
        self.message_count = 0
        self.total_actions = 0
        self.pending_actions = 0
        self.state = CONNECTING
        self._tasks: set[asyncio.Task[Any]] | None = None
        # Token buckets of the say and action rates, made on first use (idle clients pay
        # only these two pointers).
        self._say_bucket: TokenBucket | None = None
        self._action_bucket: TokenBucket | None = None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.type} {self.id} {self.state.value} "
            f"{self.remote_ip}:{self.remote_port}>"
        )

    @property
    def open(self) -> bool:
        """True while the connection is registered and not closing."""
        return self.state is OPEN

    @property
    def destroyed(self) -> bool:
        """True once the connection started closing (or was refused)."""
        return self.state is CLOSING or self.state is CLOSED

    # transport hooks ---------------------------------------------------------------------

    def frame(self, data: bytes) -> Any:
        """Wrap encoded JSON for this transport; the result goes to :meth:`write_frame`."""
        return data

    def write_frame(self, frame: Any) -> None:
        """Queue a framed message for the client; never blocks."""
        raise NotImplementedError

    def close_transport(self) -> None:
        """Close the underlying transport after a goodbye, if the transport has one."""

    def goodbye(self) -> None:
        """Send the transport's farewell before closing (the socket says ``Bye!``)."""

    def refuse(self, reason: str) -> None:
        """Tell the client it was refused, then close the transport (no goodbye)."""
        self.write_frame(self.frame(jsonwire.dumps(replies.refused(reason))))
        self.close_transport()

    # public API --------------------------------------------------------------------------

    async def send_message(self, message: Any) -> None:
        """Push any JSON value to this client."""
        if self.state is OPEN:
            self.write_frame(self.frame(jsonwire.dumps(message)))

    async def destroy(self) -> None:
        """Disconnect: run destroy middleware, leave every room, close the transport."""
        await self.api.connections.destroy(self)

    def run_in_background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run work for this connection (an action) concurrently; :meth:`settle` awaits it."""
        task = self.api.spawn(coroutine)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for this connection's background work to finish."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def may_say(self, rate: float, now: float) -> bool:
        """Whether one more say fits ``rate`` per second (0: no limit) at time ``now``."""
        if not rate:
            return True
        bucket = self._say_bucket
        if bucket is None:
            bucket = self._say_bucket = TokenBucket(rate, now)
        return bucket.take(now)

    def may_run_action(self, rate: float, now: float) -> bool:
        """Whether one more action fits ``rate`` per second (0: no limit) at time ``now``."""
        if not rate:
            return True
        bucket = self._action_bucket
        if bucket is None:
            bucket = self._action_bucket = TokenBucket(rate, now)
        return bucket.take(now)

    def details(self) -> dict[str, Any]:
        """The ``detailsView`` data, in ActionHero's camelCase (``user`` once authenticated)."""
        details: dict[str, Any] = {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "remoteIP": self.remote_ip,
            "remotePort": self.remote_port,
            "params": self.params,
            "connectedAt": self.connected_at,
            "rooms": list(self.rooms),
            "totalActions": self.total_actions,
            "pendingActions": self.pending_actions,
        }
        if self.user is not None:
            details["user"] = self.user
        return details


ConnectionHook = Callable[[Connection], Any]


@dataclass
class ConnectionMiddleware:
    """``create(connection)`` and ``destroy(connection)`` hooks (sync or async).

    ``create`` runs before the connection is registered or answered; raising refuses the
    connection, and the client is told the error's message before it is closed.
    """

    name: str
    priority: int = 100
    create: ConnectionHook | None = None
    destroy: ConnectionHook | None = None


class Connections:
    """This node's connections by id (``api.connections``) and their middleware.

    It owns every change of a connection's :class:`ConnectionState`. ``leave_rooms`` is
    how a closing connection leaves its rooms (the chat room's ``leave_all``).
    """

    def __init__(self) -> None:
        self._by_id: dict[str, Connection] = {}
        self._middleware: list[ConnectionMiddleware] = []
        self._creates: list[ConnectionHook] = []
        self._by_type: dict[str, int] = {}
        self.leave_rooms: Callable[[Connection], Awaitable[None]] | None = None

    def add_middleware(self, middleware: ConnectionMiddleware) -> None:
        self._middleware = [m for m in self._middleware if m.name != middleware.name]
        self._middleware.append(middleware)
        self._middleware.sort(key=lambda m: m.priority)
        self._creates = [m.create for m in self._middleware if m.create is not None]

    def remove_middleware(self, name: str) -> None:
        self._middleware = [m for m in self._middleware if m.name != name]
        self._creates = [m.create for m in self._middleware if m.create is not None]

    def get(self, connection_id: str) -> Connection | None:
        return self._by_id.get(connection_id)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_id.values()))

    def by_type(self) -> dict[str, int]:
        """How many open connections each transport type has (``{"socket": 3, …}``)."""
        return {kind: count for kind, count in self._by_type.items() if count}

    def _track(self, connection: Connection) -> None:
        connection.state = OPEN
        self._by_id[connection.id] = connection
        self._by_type[connection.type] = self._by_type.get(connection.type, 0) + 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("connection %r opened", connection)

    async def register(self, connection: Connection) -> None:
        """Run create middleware, then open and track ``connection``.

        Raises :class:`ConnectionRefused` when a create hook raised (the connection is
        then closed and was never tracked), or when the client went away while the hooks
        ran (then the destroy hooks have run too). Either way the caller answers nothing.
        """
        if connection.state is not CONNECTING:
            raise ConnectionRefused("connection already registered or closed")
        for create in self._creates:
            try:
                await call_hook(create, connection)
            except Exception as error:
                log.debug("connection %r refused by create middleware: %s", connection, error)
                connection.state = CLOSED
                raise ConnectionRefused(str(error) or type(error).__name__) from error
            if connection.state is not CONNECTING:  # the client left while we awaited
                await self._run_destroy_hooks(connection)
                connection.state = CLOSED
                raise ConnectionRefused("connection closed during create middleware")
        self._track(connection)

    def register_now(self, connection: Connection) -> bool:
        """:meth:`register` without awaiting, when no create middleware has to run.

        Returns False (and changes nothing) when some create middleware exists: the caller
        then awaits :meth:`register`. Lets a transport register without a task per client.
        """
        if self._creates or connection.state is not CONNECTING:
            return False
        self._track(connection)
        return True

    def refuse(self, connection: Connection, reason: str) -> None:
        """Refuse a connection that was never registered (a bad token on its URL): the
        client is told ``reason`` and closed; no middleware runs."""
        if connection.state is CONNECTING:
            connection.state = CLOSED
            connection.refuse(reason)

    async def destroy(self, connection: Connection) -> None:
        """Run destroy middleware, leave every room, forget the connection, close it.

        A connection still ``CONNECTING`` is only marked ``CLOSING``: :meth:`register`
        notices after its current hook and finishes the job.
        """
        state = connection.state
        if state is CONNECTING:
            connection.state = CLOSING
            connection.close_transport()
            return
        if state is not OPEN:
            return
        connection.state = CLOSING
        try:
            await self._run_destroy_hooks(connection)
            if self.leave_rooms is not None:
                await self.leave_rooms(connection)
        finally:
            if self._by_id.pop(connection.id, None) is not None:
                self._by_type[connection.type] -= 1
            connection.goodbye()
            connection.close_transport()
            connection.state = CLOSED
            if log.isEnabledFor(logging.DEBUG):
                log.debug("connection %r closed", connection)

    async def _run_destroy_hooks(self, connection: Connection) -> None:
        for middleware in self._middleware:
            if middleware.destroy is not None:
                try:
                    await call_hook(middleware.destroy, connection)
                except Exception:
                    log.exception("connection destroy middleware %s failed", middleware.name)
