"""What both Python clients share: reply matching, handlers and the verb methods."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("roomcast.client")

Handler = Callable[[dict[str, Any]], Any]


class ClientError(Exception):
    """The server refused a request; ``str()`` is its message, ``reply`` the whole reply."""

    def __init__(self, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reply = reply or {}


class BaseClient:
    """Verbs, actions and chat handlers over some transport (see the two subclasses).

    Register handlers with :meth:`on_say` and :meth:`on_welcome`, or read
    :attr:`chat_messages`, an ``asyncio.Queue`` of every chat message received.
    """

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.welcome: dict[str, Any] | None = None
        self.chat_messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._say_handlers: list[Handler] = []
        self._welcome_handlers: list[Handler] = []
        self._welcomed = asyncio.Event()
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    # handlers ----------------------------------------------------------------------------

    def on_say(self, handler: Handler) -> Handler:
        """Call ``handler(message)`` for every chat message (usable as a decorator)."""
        self._say_handlers.append(handler)
        return handler

    def on_welcome(self, handler: Handler) -> Handler:
        self._welcome_handlers.append(handler)
        return handler

    # verbs -------------------------------------------------------------------------------

    async def room_add(self, room: str) -> Any:
        return await self._verb("roomAdd", room=room)

    async def room_leave(self, room: str) -> Any:
        return await self._verb("roomLeave", room=room)

    async def room_view(self, room: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._verb("roomView", room=room)
        return result

    async def say(self, room: str, message: str) -> None:
        await self._verb("say", room=room, message=message)

    async def details_view(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._verb("detailsView")
        return result

    async def action(
        self, name: str, params: dict[str, Any] | None = None, /, **more: Any
    ) -> dict[str, Any]:
        """Run action ``name``; returns its response, raises ``ClientError`` on ``error``."""
        reply = await self._action(name, {**(params or {}), **more})
        if reply.get("error"):
            raise ClientError(str(reply["error"]), reply)
        return reply

    # transport hooks ---------------------------------------------------------------------

    async def _verb(self, verb: str, **args: Any) -> Any:
        raise NotImplementedError

    async def _action(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # shared plumbing ---------------------------------------------------------------------

    def _expect(self, key: Any) -> asyncio.Future[dict[str, Any]]:
        if self.closed.is_set():  # no reply can come: fail now rather than at the timeout
            raise ConnectionError("connection closed")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        return future

    async def _wait(self, key: Any, future: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(future, self.timeout)
        finally:
            self._pending.pop(key, None)

    @staticmethod
    def _verb_result(reply: dict[str, Any]) -> Any:
        if reply.get("status") != "OK":
            raise ClientError(str(reply.get("error") or reply.get("status")), reply)
        return reply.get("data")

    async def _dispatch(self, message: Any, key: Any) -> None:
        """Route one incoming message: a reply to its waiter, chat to handlers."""
        if not isinstance(message, dict):
            return
        context = message.get("context")
        if context == "response":
            future = self._pending.get(key)
            if future is not None and not future.done():
                future.set_result(message)
            return
        if context == "user":
            self.chat_messages.put_nowait(message)
            await _run_handlers(self._say_handlers, message)
        elif "welcome" in message:
            self.welcome = message
            self._welcomed.set()
            await _run_handlers(self._welcome_handlers, message)

    def _fail_pending(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        self.closed.set()


async def _run_handlers(handlers: list[Handler], message: dict[str, Any]) -> None:
    for handler in handlers:
        try:
            result = handler(message)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("client handler failed")
