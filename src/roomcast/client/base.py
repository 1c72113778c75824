"""What both Python clients share: the session and the verbs; the subclasses move bytes.

The session: connect to the first server that answers, fail over among the servers
given, reconnect with backoff after an unexpected drop, re-join the rooms (resuming
rooms with history from the last position seen) and tell the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, Self, TypeVar

from roomcast.client.backoff import Backoff
from roomcast.client.events import Disconnected, Reconnected
from roomcast.client.positions import Position, RoomPositions

log = logging.getLogger("roomcast.client")

Handler = Callable[[dict[str, Any]], Any]
RecoveryHandler = Callable[[str, int], Any]
DisconnectHandler = Callable[[Disconnected], Any]
ReconnectHandler = Callable[[Reconnected], Any]
ReplyHook = Callable[[dict[str, Any]], Awaitable[None]]
HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])
TargetT = TypeVar("TargetT")

# The server's wording for "you already are where you asked to be".
_ALREADY_IN_ROOM = "connection already in this room"
_NOT_IN_ROOM = "connection not in this room"
_ROOM_DELETED = "this room has been deleted"


class ClientError(Exception):
    """The server refused a request; ``str()`` is its message, ``reply`` the whole reply."""

    def __init__(self, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reply = reply or {}


class ClientConnectionError(ConnectionError):
    """No server could be reached; the message names each server tried and why it failed."""


class ClientState(enum.Enum):
    """Where a client's session is; ``client.state`` holds one."""

    IDLE = "idle"  # connect() not called yet
    CONNECTING = "connecting"  # connect() in progress
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # the connection dropped; trying to bring it back
    CLOSED = "closed"  # disconnect(), a failed connect(), or reconnecting gave up or is off


class BaseClient(Generic[TargetT]):
    """Verbs, actions, chat handlers and the reconnecting session (see the two subclasses).

    Register handlers with :meth:`on_say`, :meth:`on_welcome`, :meth:`on_presence`,
    :meth:`on_recovered`, :meth:`on_unrecovered`, :meth:`on_disconnect` and
    :meth:`on_reconnect`, or read :attr:`chat_messages`, an ``asyncio.Queue`` of every
    chat message received. Handlers may be plain functions or coroutine functions, awaited
    in order. Say, presence and recovery handlers run as messages arrive, before the next
    one is read: they must not wait for a reply themselves (start a task for that).
    """

    #: What a failed attempt to reach one server raises (TimeoutError is an OSError).
    _connect_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(
        self,
        targets: Sequence[TargetT],
        *,
        timeout: float = 10.0,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        reconnect_attempts: int | None = None,
    ) -> None:
        if not targets:
            raise ValueError("at least one server is required")
        self.timeout = timeout
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        #: Reconnect attempts after a drop before giving up; None tries for ever.
        self.reconnect_attempts = reconnect_attempts
        self.state = ClientState.IDLE
        self.welcome: dict[str, Any] | None = None
        #: Rooms this client is in, in join order; re-joined after a reconnect.
        self.rooms: list[str] = []
        self.chat_messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        #: Set once the client is closed for good (see :class:`ClientState`).
        self.closed = asyncio.Event()
        self._targets = list(targets)
        self._index = 0  # the server in use, or the one tried last
        self._positions = RoomPositions()
        self._say_handlers: list[Handler] = []
        self._welcome_handlers: list[Handler] = []
        self._presence_handlers: list[Handler] = []
        self._recovered_handlers: list[RecoveryHandler] = []
        self._unrecovered_handlers: list[RecoveryHandler] = []
        self._disconnect_handlers: list[DisconnectHandler] = []
        self._reconnect_handlers: list[ReconnectHandler] = []
        self._welcomed = asyncio.Event()
        self._up = asyncio.Event()  # set while CONNECTED
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._reply_hooks: dict[Any, ReplyHook] = {}
        self._reader: asyncio.Task[None] | None = None
        self._session_task: asyncio.Task[None] | None = None
        # Bumped for each transport: a reader that ends after its transport was replaced
        # or closed on purpose is not a drop.
        self._generation = 0

    # handlers ----------------------------------------------------------------------------

    def on_say(self, handler: Handler) -> Handler:
        """Call ``handler(message)`` for every chat message (usable as a decorator).

        A message replayed after a reconnect whose offset was already seen is dropped
        before it reaches the handlers.
        """
        self._say_handlers.append(handler)
        return handler

    def on_welcome(self, handler: Handler) -> Handler:
        """Call ``handler(welcome)`` on each (re)connection's welcome message."""
        self._welcome_handlers.append(handler)
        return handler

    def on_presence(self, handler: Handler) -> Handler:
        """Call ``handler(event)`` for each presence event (``context: presence``).

        ``event`` is ``{"context": "presence", "event": "join"|"leave", "room", "id",
        "details", "at"}`` (no ``details`` on leave); servers send them when
        ``presence_events`` is on.
        """
        self._presence_handlers.append(handler)
        return handler

    def on_recovered(self, handler: HandlerT) -> HandlerT:
        """Call ``handler(room, count)`` when a re-join resumed ``room`` with no gap.

        The ``count`` missed messages follow, in order, through the say handlers.
        """
        self._recovered_handlers.append(handler)
        return handler

    def on_unrecovered(self, handler: HandlerT) -> HandlerT:
        """Call ``handler(room, 0)`` when a re-join could not resume ``room``'s history.

        The client is in the room again and hears new messages, but missed some: reload
        what you show from elsewhere.
        """
        self._unrecovered_handlers.append(handler)
        return handler

    def on_disconnect(self, handler: HandlerT) -> HandlerT:
        """Call ``handler(Disconnected(url, reason, will_reconnect))`` when the link drops."""
        self._disconnect_handlers.append(handler)
        return handler

    def on_reconnect(self, handler: HandlerT) -> HandlerT:
        """Call ``handler(Reconnected(url, attempt, rooms, failed_rooms))`` once back."""
        self._reconnect_handlers.append(handler)
        return handler

    # session -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server in use (or tried last), as text."""
        return self._describe(self._targets[self._index])

    @property
    def urls(self) -> list[str]:
        """Every server this client may use, in the order it tries them."""
        return [self._describe(target) for target in self._targets]

    def position(self, room: str) -> Position | None:
        """The last ``(offset, epoch)`` seen in ``room``, or None."""
        return self._positions.get(room)

    async def connect(self) -> dict[str, Any]:
        """Connect to the first server that answers, in the order given; return its welcome.

        Raises :class:`ClientConnectionError` naming every server tried when none
        answers; nothing is left open then. Once connected, a drop is repaired by the
        client itself (unless ``reconnect=False``); call :meth:`disconnect` when done.
        """
        if self.state is ClientState.CONNECTED and self.welcome is not None:
            return self.welcome
        if self.state in (ClientState.CONNECTING, ClientState.RECONNECTING):
            await self._ready()
            assert self.welcome is not None
            return self.welcome
        if self._session_task is not asyncio.current_task():
            await _stop_when_done(self._session_task)  # the last session's cleanup
        self.state = ClientState.CONNECTING
        self.closed.clear()
        failures: list[str] = []
        for index in range(len(self._targets)):
            if self.state is not ClientState.CONNECTING:  # disconnect() meanwhile
                raise ClientConnectionError("client disconnected while connecting")
            self._index = index
            try:
                await self._attach()
            except self._connect_errors as error:
                failures.append(f"{self.url} ({_describe_error(error)})")
                continue
            except BaseException:
                await self._close_for_good()
                raise
            if self.state is not ClientState.CONNECTING:  # disconnect() meanwhile
                await self._drop_transport()
                raise ClientConnectionError("client disconnected while connecting")
            self.state = ClientState.CONNECTED
            self._up.set()
            assert self.welcome is not None
            return self.welcome
        await self._close_for_good()
        raise ClientConnectionError("could not connect to " + ", ".join(failures))

    async def disconnect(self) -> None:
        """Say ``quit``, close and stop reconnecting. Safe to call more than once.

        The client forgets its rooms; :meth:`connect` starts a new session.
        """
        was = self.state
        url = self.url
        self.state = ClientState.CLOSED
        self._up.clear()
        await _stop(self._session_task)
        self._session_task = None
        self._generation += 1  # the reader's end is ours, not a drop
        with contextlib.suppress(Exception):
            await self._close_transport(polite=was is ClientState.CONNECTED)
        await _stop(self._reader)
        self._fail_pending(ConnectionError("client disconnected"))
        await self._release()
        self.rooms.clear()
        self._positions.clear()
        self.closed.set()
        if was is ClientState.CONNECTED:
            await _run_handlers(
                self._disconnect_handlers, Disconnected(url, "client disconnect", False)
            )

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    # verbs -------------------------------------------------------------------------------

    async def room_add(self, room: str, since: int | None = None, epoch: str | None = None) -> Any:
        """Join ``room``; returns the reply's data (``True``).

        With ``since`` and ``epoch`` (a position from :meth:`position`) the server resumes
        the room: data is ``{"recovered", "epoch", "offset"}``, the recovery handlers
        are called and, when recovered, the missed messages follow.
        """
        args: dict[str, Any] = {"room": room}
        hook: ReplyHook | None = None
        if since is not None or epoch is not None:
            if type(since) is not int or since < 0 or not epoch or any(c.isspace() for c in epoch):
                raise ValueError("since must be an int >= 0 and epoch a word without spaces")
            args.update(since=since, epoch=epoch)
            hook = self._recovery_hook(room, since)
        try:
            result = await self._verb("roomAdd", args, hook)
        except ClientError as error:
            if str(error).startswith(_ALREADY_IN_ROOM):
                self._remember_room(room)
            raise
        self._remember_room(room)
        return result

    async def room_leave(self, room: str) -> Any:
        """Leave ``room``; returns the reply's data (``True``)."""
        try:
            result = await self._verb("roomLeave", {"room": room})
        except ClientError as error:
            if str(error).startswith(_NOT_IN_ROOM):
                self._forget_room(room)
            raise
        self._forget_room(room)
        return result

    async def room_view(self, room: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._verb("roomView", {"room": room})
        return result

    async def say(self, room: str, message: str) -> None:
        await self._verb("say", {"room": room, "message": message})

    async def details_view(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._verb("detailsView", {})
        return result

    async def action(
        self, name: str, params: dict[str, Any] | None = None, /, **more: Any
    ) -> dict[str, Any]:
        """Run action ``name``; returns its response, raises ``ClientError`` on ``error``."""
        await self._ready()
        reply = await self._transmit_action(name, {**(params or {}), **more})
        if reply.get("error"):
            raise ClientError(str(reply["error"]), reply)
        return reply

    # transport hooks ---------------------------------------------------------------------

    def _describe(self, target: TargetT) -> str:
        raise NotImplementedError

    async def _open_transport(self, target: TargetT) -> None:
        """Open a connection to ``target``; raise one of ``_connect_errors`` on failure."""
        raise NotImplementedError

    def _receive(self) -> AsyncIterator[tuple[Any, Any]]:
        """Yield ``(message, reply key)`` for each message until the connection ends."""
        raise NotImplementedError

    async def _close_transport(self, polite: bool) -> None:
        """Close the connection (saying ``quit`` first when ``polite``); idempotent."""
        raise NotImplementedError

    async def _release(self) -> None:
        """Free what outlives one connection (the WebSocket client's HTTP session)."""

    async def _transmit_verb(
        self, verb: str, args: dict[str, Any], hook: ReplyHook | None
    ) -> dict[str, Any]:
        """Send one verb now (not waiting for the session) and return its reply."""
        raise NotImplementedError

    async def _transmit_action(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # requests ----------------------------------------------------------------------------

    async def _verb(self, verb: str, args: dict[str, Any], hook: ReplyHook | None = None) -> Any:
        await self._ready()
        return self._verb_result(await self._transmit_verb(verb, args, hook))

    async def _ready(self) -> None:
        """Return once connected; while (re)connecting wait up to ``timeout`` for it."""
        if self.state is ClientState.CONNECTED:
            return
        if self.state is ClientState.IDLE:
            raise ConnectionError("not connected: call connect() first")
        if self.state is ClientState.CLOSED:
            raise ConnectionError("connection closed")
        waiters = [
            asyncio.ensure_future(self._up.wait()),
            asyncio.ensure_future(self.closed.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._up.is_set():  # set exactly while CONNECTED
            return
        if self.closed.is_set():
            raise ConnectionError("connection closed")
        raise ConnectionError(f"not connected within {self.timeout} s ({self.url})")

    def _expect(self, key: Any, hook: ReplyHook | None = None) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        if hook is not None:
            self._reply_hooks[key] = hook
        return future

    async def _wait(self, key: Any, future: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(future, self.timeout)
        finally:
            self._pending.pop(key, None)
            self._reply_hooks.pop(key, None)

    @staticmethod
    def _verb_result(reply: dict[str, Any]) -> Any:
        if reply.get("status") != "OK":
            raise ClientError(str(reply.get("error") or reply.get("status")), reply)
        return reply.get("data")

    def _fail_pending(self, error: Exception) -> None:
        pending = self._pending
        self._pending = {}
        self._reply_hooks.clear()
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    # incoming ----------------------------------------------------------------------------

    async def _dispatch(self, message: Any, key: Any) -> None:
        """Route one incoming message: a reply to its waiter, the rest to handlers."""
        if not isinstance(message, dict):
            return
        context = message.get("context")
        if context == "user":
            if "offset" in message and not self._positions.observe(message):
                return  # replayed, and already seen
            if message.get("message") == _ROOM_DELETED and message.get("from") in (0, "0"):
                self._forget_room(message.get("room"))  # the server removes us next
            self.chat_messages.put_nowait(message)
            await _run_handlers(self._say_handlers, message)
        elif context == "response":
            # A recovery reply is handled here, before the replayed messages behind it.
            hook = self._reply_hooks.pop(key, None)
            if hook is not None:
                await hook(message)
            future = self._pending.get(key)
            if future is not None and not future.done():
                future.set_result(message)
        elif context == "presence":
            await _run_handlers(self._presence_handlers, message)
        elif "welcome" in message:
            self.welcome = message
            self._welcomed.set()
            await _run_handlers(self._welcome_handlers, message)

    async def _read(self, generation: int) -> None:
        reason = "the server closed the connection"
        try:
            async for message, key in self._receive():
                await self._dispatch(message, key)
        except Exception as error:  # a reset, a broken stream: a drop like any other
            reason = _describe_error(error)
        finally:
            if generation == self._generation:
                self._fail_pending(ConnectionError("connection lost"))
                if self.state is ClientState.CONNECTED:
                    self._connection_lost(reason)

    def _connection_lost(self, reason: str) -> None:
        self._up.clear()
        if self.reconnect:
            self.state = ClientState.RECONNECTING
            self._session_task = asyncio.create_task(self._reconnect_forever(reason))
        else:
            self.state = ClientState.CLOSED
            self.closed.set()
            self._session_task = asyncio.create_task(self._after_final_drop(reason))

    async def _after_final_drop(self, reason: str) -> None:
        await self._close_transport(polite=False)
        await self._release()
        await _run_handlers(self._disconnect_handlers, Disconnected(self.url, reason, False))

    # reconnecting ------------------------------------------------------------------------

    async def _reconnect_forever(self, reason: str) -> None:
        lost_url = self.url
        log.info("connection to %s lost (%s); reconnecting", lost_url, reason)
        await self._close_transport(polite=False)
        await _run_handlers(self._disconnect_handlers, Disconnected(lost_url, reason, True))
        attempt = 0
        while self.state is ClientState.RECONNECTING:
            attempt += 1
            if self.reconnect_attempts is not None and attempt > self.reconnect_attempts:
                await self._give_up(attempt - 1)
                return
            await asyncio.sleep(self.backoff.delay(attempt))
            if self.state is not ClientState.RECONNECTING:
                return
            # Each attempt tries the next server: a dead node's clients move on.
            self._index = (self._index + 1) % len(self._targets)
            try:
                await self._attach()
                failed = await self._rejoin()
            except self._connect_errors as error:
                log.debug("reconnect attempt %d to %s failed: %s", attempt, self.url, error)
                await self._drop_transport()
                continue
            except Exception:  # a bug, not the network: say so, and keep trying
                log.exception("reconnect attempt %d to %s failed", attempt, self.url)
                await self._drop_transport()
                continue
            if (
                self._reader is None
                or self._reader.done()
                or (self.state is not ClientState.RECONNECTING)
            ):
                await self._drop_transport()
                continue
            self.state = ClientState.CONNECTED
            self._up.set()
            log.info("reconnected to %s (attempt %d)", self.url, attempt)
            await _run_handlers(
                self._reconnect_handlers,
                Reconnected(self.url, attempt, tuple(self.rooms), failed),
            )
            return

    async def _give_up(self, attempts: int) -> None:
        self.state = ClientState.CLOSED
        self.closed.set()
        await self._release()
        reason = f"gave up after {attempts} reconnect attempts"
        log.warning("%s: %s", self.url, reason)
        await _run_handlers(self._disconnect_handlers, Disconnected(self.url, reason, False))

    async def _attach(self) -> None:
        """Open the current server and wait for its welcome; on failure nothing stays open."""
        target = self._targets[self._index]
        self._generation += 1
        generation = self._generation
        self._welcomed.clear()
        self.welcome = None
        try:
            await asyncio.wait_for(self._open_transport(target), self.timeout)
            reader = self._reader = asyncio.create_task(self._read(generation))
            welcomed = asyncio.ensure_future(self._welcomed.wait())
            try:
                await asyncio.wait(
                    [welcomed, reader], timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                welcomed.cancel()
            if not self._welcomed.is_set():
                if reader.done():
                    raise ConnectionError("closed before its welcome")
                raise TimeoutError(f"no welcome within {self.timeout} s")
        except BaseException:
            await self._drop_transport()
            raise

    async def _drop_transport(self) -> None:
        self._generation += 1
        with contextlib.suppress(Exception):
            await self._close_transport(polite=False)
        await _stop(self._reader)
        self._reader = None
        self._fail_pending(ConnectionError("connection lost"))

    async def _close_for_good(self) -> None:
        self.state = ClientState.CLOSED
        await self._drop_transport()
        await self._release()
        self.closed.set()

    async def _rejoin(self) -> dict[str, str]:
        """Join this client's rooms on the new connection; returns those that failed."""
        rooms = list(self.rooms)
        results = await asyncio.gather(
            *(self._rejoin_one(room) for room in rooms), return_exceptions=True
        )
        failed: dict[str, str] = {}
        for room, result in zip(rooms, results, strict=True):
            if isinstance(result, ClientError):
                failed[room] = str(result)
            elif isinstance(result, BaseException):
                raise result  # the connection failed: this attempt failed
        for room in failed:
            self._forget_room(room)
        return failed

    async def _rejoin_one(self, room: str) -> None:
        position = self._positions.get(room)
        if position is None:
            args: dict[str, Any] = {"room": room}
            hook = None
        else:
            args = {"room": room, "since": position.offset, "epoch": position.epoch}
            hook = self._recovery_hook(room, position.offset)
        try:
            self._verb_result(await self._transmit_verb("roomAdd", args, hook))
        except ClientError as error:
            if not str(error).startswith(_ALREADY_IN_ROOM):
                raise

    def _recovery_hook(self, room: str, since: int) -> ReplyHook:
        async def on_reply(reply: dict[str, Any]) -> None:
            if reply.get("status") != "OK":
                return  # a refused join: the caller sees the error
            data = reply.get("data")
            if isinstance(data, dict) and data.get("recovered") is True:
                latest = data.get("offset")
                count = latest - since if type(latest) is int and latest > since else 0
                await _run_handlers(self._recovered_handlers, room, count)
                return
            fields = data if isinstance(data, dict) else {}
            epoch, latest = fields.get("epoch"), fields.get("offset")
            if isinstance(epoch, str) and type(latest) is int:
                self._positions.resume(room, epoch, latest)
            else:  # this server keeps no history of the room
                self._positions.forget(room)
            await _run_handlers(self._unrecovered_handlers, room, 0)

        return on_reply

    def _remember_room(self, room: str) -> None:
        if room not in self.rooms:
            self.rooms.append(room)

    def _forget_room(self, room: Any) -> None:
        if room in self.rooms:
            self.rooms.remove(room)
        if isinstance(room, str):
            self._positions.forget(room)


async def _run_handlers(handlers: Sequence[Callable[..., Any]], *args: Any) -> None:
    for handler in handlers:
        try:
            result = handler(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("client handler failed")


async def _stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait for it, unless it is the task running this."""
    if task is None or task.done() or task is asyncio.current_task():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled too
    except Exception:
        log.debug("stopped task failed", exc_info=True)


async def _stop_when_done(task: asyncio.Task[Any] | None) -> None:
    """Let ``task`` finish (it is cleaning up), then go on."""
    if task is not None and not task.done():
        with contextlib.suppress(Exception):
            await asyncio.shield(task)


def _describe_error(error: BaseException) -> str:
    return str(error) or type(error).__name__
