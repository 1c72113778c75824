"""Chat middleware: join, leave, say and on_say_receive hooks, run in priority order."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from roomcast.hooks import call_hook

log = logging.getLogger("roomcast.chat")

if TYPE_CHECKING:
    from roomcast.connection import Connection

Hook = Callable[..., Any]


@dataclass
class ChatMiddleware:
    """A named set of chat hooks; any subset of the four may be given.

    ``join(connection, room)`` / ``leave(connection, room)`` refuse by raising.
    ``on_say_receive(connection, room, payload)`` runs once on the sender's node and may
    return a new payload. ``say(connection, room, payload)`` runs once per recipient; raising
    or returning ``False`` skips that recipient, returning a dict replaces the payload.
    Hooks may be plain functions or coroutines. Lower ``priority`` runs first.
    """

    name: str
    priority: int = 100
    join: Hook | None = None
    leave: Hook | None = None
    say: Hook | None = None
    on_say_receive: Hook | None = None


class ChatMiddlewareChain:
    """The ordered middleware of one node, with a precomputed hook list per kind."""

    def __init__(self) -> None:
        self._items: list[ChatMiddleware] = []
        self.join: list[Hook] = []
        self.leave: list[Hook] = []
        self.say: list[Hook] = []
        self.on_say_receive: list[Hook] = []

    def add(self, middleware: ChatMiddleware) -> None:
        """Add a middleware; one with the same name is replaced."""
        self._items = [m for m in self._items if m.name != middleware.name]
        self._items.append(middleware)
        self._rebuild()

    def remove(self, name: str) -> None:
        """Take out the middleware called ``name`` (no error when absent)."""
        self._items = [m for m in self._items if m.name != name]
        self._rebuild()

    def names(self) -> list[str]:
        return [m.name for m in self._ordered()]

    def _ordered(self) -> list[ChatMiddleware]:
        # sorted() is stable: equal priorities keep insertion order.
        return sorted(self._items, key=lambda m: m.priority)

    def _rebuild(self) -> None:
        ordered = self._ordered()
        self.join = [m.join for m in ordered if m.join is not None]
        self.leave = [m.leave for m in ordered if m.leave is not None]
        self.say = [m.say for m in ordered if m.say is not None]
        self.on_say_receive = [m.on_say_receive for m in ordered if m.on_say_receive is not None]

    async def run_join(self, connection: Connection, room: str) -> None:
        for hook in self.join:
            await call_hook(hook, connection, room)

    async def run_leave(self, connection: Connection, room: str) -> None:
        for hook in self.leave:
            await call_hook(hook, connection, room)

    async def run_on_say_receive(
        self, connection: Any, room: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        for hook in self.on_say_receive:
            result = await call_hook(hook, connection, room, payload)
            if result is not None:
                payload = result
        return payload

    async def run_say(
        self, connection: Connection, room: str, payload: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Return the payload for this recipient, or None to skip it."""
        payload = dict(payload)  # per-recipient copy: one recipient's changes never leak
        for hook in self.say:
            try:
                result = await call_hook(hook, connection, room, payload)
            except Exception as error:  # skips this recipient only; the others still get it
                log.warning(
                    "say middleware %s skipped %s in %s: %r",
                    getattr(hook, "__qualname__", hook),
                    getattr(connection, "id", connection),
                    room,
                    error,
                )
                return None
            if result is False:
                return None
            if result is not None:
                payload = result
        return payload
