"""Rooms with history, on the chat side: which rooms keep it, reading it, recovering joins.

In a room with history every message goes through Redis first (the history script gives
it its offset and publishes it), and every node, the sender's included, delivers it from
the room's channel: so every node delivers a room's messages in offset order.

A join that recovers (``roomAdd <room> <since> <epoch>``) subscribes first, collects the
room's live messages for that connection while it reads the history, answers, replays,
then hands the connection to the room index: no gap, no duplicate, and nothing of the room
reaches the client between its request and the reply. Other members' delivery is not
touched: the recovering connection is not in the index until its replay is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from roomcast import jsonwire
from roomcast.chat.errors import ChatError, ConnectionNotFound
from roomcast.chat.middleware import ChatMiddlewareChain
from roomcast.chat.room_index import RoomIndex
from roomcast.cluster.history import (
    HistoryPolicy,
    HistoryState,
    HistoryStore,
    history_policy,
    position_of,
)

if TYPE_CHECKING:
    from roomcast.connection import Connection

__all__ = [
    "HistoryPolicy",
    "HistoryUnavailable",
    "NoHistory",
    "NotObject",
    "RoomHistory",
    "history_policy",
]

log = logging.getLogger("roomcast.chat")

#: ``roomHistory`` returns this many messages unless asked for fewer; never more than
#: ``MAX_LIMIT``.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Seconds a recovering join waits for Redis to confirm the room's subscription.
CONFIRM_TIMEOUT = 5.0


class NoHistory(ChatError):
    def __init__(self, room: str) -> None:
        super().__init__(f"room has no history ({room})")


class HistoryUnavailable(ChatError):
    def __init__(self, room: str) -> None:
        super().__init__(f"history is unavailable ({room})")


class NotObject(ChatError):
    def __init__(self) -> None:
        super().__init__("a message in a room with history must be a JSON object")


class RoomHistory:
    """The chat room's history rooms: appending, reading, and joins that recover.

    ``recovering`` maps a room to the connections recovering in it, each with the live
    messages collected for it meanwhile; the chat room's channel handler for history
    rooms appends to it.
    """

    def __init__(
        self,
        policy: HistoryPolicy,
        store: HistoryStore,
        index: RoomIndex,
        middleware: ChatMiddlewareChain,
    ) -> None:
        self.policy = policy
        self._store = store
        self._index = index
        self._middleware = middleware
        self.recovering: dict[str, dict[str, list[bytes]]] = {}
        self._finishing: set[asyncio.Task[None]] = set()

    def keeps(self, room: str) -> bool:
        return self.policy.keeps(room)

    @property
    def publishes(self) -> bool:
        """True when the history script publishes the message itself."""
        return bool(self._store.publish_command)

    async def append(self, room: str, header: bytes, body: bytes) -> tuple[int, str]:
        """Give ``body`` its offset, keep it and publish it (one round trip)."""
        if not body.startswith(b"{") or not body.endswith(b"}"):
            raise NotObject()
        return await self._store.append(
            room, header, body, size=self.policy.size, ttl=self.policy.ttl
        )

    async def read(
        self, connection: Connection, room: str, since: int, limit: int
    ) -> dict[str, Any]:
        """The ``roomHistory`` data: epoch, last offset and kept messages after ``since``."""
        if not self.keeps(room):
            raise NoHistory(room)
        limit = min(limit, MAX_LIMIT)
        state = await self._store.read(room, since, limit, ttl=self.policy.ttl)
        messages = []
        for data in state.messages:
            message = jsonwire.loads(data)
            if self._middleware.say:
                message = await self._middleware.run_say(connection, room, message)
                if message is None:
                    continue
            messages.append(message)
        return {"room": room, "epoch": state.epoch, "offset": state.offset, "messages": messages}

    # recovery ----------------------------------------------------------------------------

    def collect(self, room: str, connection_id: str) -> None:
        """Start collecting ``room``'s live messages for a connection about to recover."""
        self.recovering.setdefault(room, {})[connection_id] = []

    def forget(self, room: str, connection_id: str) -> None:
        """Stop a recovery (the connection left the room); its collected messages go."""
        buffers = self.recovering.get(room)
        if buffers is not None:
            buffers.pop(connection_id, None)
            if not buffers:
                del self.recovering[room]

    def is_recovering(self, room: str) -> bool:
        return room in self.recovering

    async def recover(
        self,
        connection: Connection,
        room: str,
        since: int,
        epoch: str,
        subscribed: Callable[[], Awaitable[None]],
    ) -> dict[str, Any]:
        """Read the history of a connection :meth:`collect` started for; return the reply
        data ``{"recovered", "epoch", "offset"}``.

        The replay, then the collected live messages, then the hand-over to the room
        index run in a task started here: its first step runs once the caller's current
        step ends, so the caller must write the reply before it next awaits (the verb
        path does). ``subscribed`` returns once Redis confirmed the room's subscription:
        from then on every new message is collected, so the history read after it
        leaves no gap.
        """
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                await subscribed()
        except TimeoutError:  # pub/sub is down: a replay could not be followed live
            raise HistoryUnavailable(room) from None
        state = await self._store.read(room, since, 0, ttl=self.policy.ttl)
        recovered = state.epoch == epoch and state.covers(since)
        buffer = self.recovering.get(room, {}).get(connection.id)
        if buffer is None or not connection.open:  # it left while we read
            raise ConnectionNotFound()
        replay = state.messages if recovered else []
        task = asyncio.get_running_loop().create_task(self._finish(connection, room, replay, state))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return {"recovered": recovered, "epoch": state.epoch, "offset": state.offset}

    async def _finish(
        self, connection: Connection, room: str, replay: list[bytes], state: HistoryState
    ) -> None:
        """Send the replay and the collected messages newer than it, then put the
        connection in the room index (at once, so nothing falls between)."""
        try:
            pending = list(replay)
            latest = state.offset
            while True:
                buffers = self.recovering.get(room)
                buffer = buffers.get(connection.id) if buffers else None
                if buffer is None or not connection.open:
                    return  # it left the room meanwhile
                if not pending:
                    pending = [data for data in buffer if _newer(data, latest)]
                    buffer.clear()
                    if not pending:
                        break
                for data in pending:
                    offset = position_of(data)
                    if offset is not None:
                        latest = max(latest, offset)
                    await self._send(connection, room, data)
                pending = []
            self.forget(room, connection.id)
            self._index.add(room, connection)
        except Exception:
            log.exception("recovery of %s in %s failed", connection.id, room)
            self.forget(room, connection.id)
            if connection.open and room in connection.rooms:
                self._index.add(room, connection)

    async def _send(self, connection: Connection, room: str, data: bytes) -> None:
        if self._middleware.say:
            message = jsonwire.loads(data)
            personal = await self._middleware.run_say(connection, room, message)
            if personal is None:
                return
            if personal != message:
                data = jsonwire.dumps(personal)
        connection.write_frame(connection.frame(data))


def _newer(data: bytes, latest: int) -> bool:
    """True unless ``data`` carries an offset the client has already had."""
    offset = position_of(data)
    return offset is None or offset > latest
