"""Remote procedure calls between nodes over pub/sub.

A request goes to every node on one channel; the node that owns the connection (or every
node, for a broadcast call) runs the registered method and replies on the caller's own
channel. Errors travel as their class name and message and are rebuilt unchanged.

Requests and replies are sealed envelopes (``envelope.py``): the JSON inside carries the
call, never the server token. A request is served at most once, so one read off the bus
cannot be replayed to run it again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from roomcast import jsonwire
from roomcast.cluster.bus import Bus
from roomcast.cluster.dropped import DropLog
from roomcast.cluster.envelope import (
    MAX_AGE,
    EnvelopeError,
    Opened,
    derive_key,
    open_envelope,
    seal,
)
from roomcast.cluster.errors import WireErrors
from roomcast.cluster.keys import Keys
from roomcast.cluster.sharded import ShardedBus
from roomcast.cluster.store import Store

log = logging.getLogger("roomcast.rpc")

Method = Callable[..., Awaitable[Any]]


class UnknownRpcMethod(Exception):
    def __init__(self, method: str) -> None:
        super().__init__(f"unknown RPC method ({method})")


@dataclass
class _Waiter:
    future: asyncio.Future[Any]
    expected: set[str]
    for_connection: bool
    results: dict[str, Any] = field(default_factory=dict)


class Rpc:
    """Call registered methods on other nodes: ``call`` for a connection, ``call_all``."""

    def __init__(
        self,
        *,
        node_id: str,
        token: str,
        keys: Keys,
        bus: Bus | ShardedBus,
        store: Store,
        timeout: float,
        owns_connection: Callable[[str], bool],
        errors: WireErrors | None = None,
    ) -> None:
        self.node_id = node_id
        self._errors = errors or WireErrors()
        #: Calls this node sent, and how many of them timed out.
        self.calls = 0
        self.timeouts = 0
        self._key = derive_key(token)
        self._keys = keys
        self._bus = bus
        self._store = store
        self.timeout = timeout
        self._owns = owns_connection
        self._methods: dict[str, Method] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._request_drops = DropLog(log, "RPC request")
        self._reply_drops = DropLog(log, "RPC reply")
        # MACs of the requests served lately, oldest first, to refuse a replayed one.
        self._served: set[bytes] = set()
        self._served_order: deque[tuple[float, bytes]] = deque()

    def register(self, name: str, method: Method) -> None:
        """Allow other nodes to call ``method`` as ``name``; nothing else is callable."""
        self._methods[name] = method

    async def start(self) -> None:
        await self._bus.subscribe(self._keys.rpc_channel, self._on_request)
        await self._bus.subscribe(self._keys.node_channel(self.node_id), self._on_reply)

    async def stop(self) -> None:
        for waiter in self._waiters.values():
            if not waiter.future.done():
                waiter.future.set_exception(self._errors.timeout())
        self._waiters.clear()
        for task in list(self._tasks):
            task.cancel()

    async def call(self, method: str, *args: Any, connection_id: str) -> Any:
        """Run ``method(*args)`` on the node owning ``connection_id``; return its result.

        Raises the owner's error unchanged, ``ConnectionNotFound`` as soon as every live
        node has said it does not own the connection, or ``RpcTimeout``.
        """
        others = [n for n in await self._store.live_nodes() if n != self.node_id]
        if not others:
            raise self._errors.not_found()
        return await self._send(method, args, connection_id, set(others))

    async def call_all(self, method: str, *args: Any) -> dict[str, Any]:
        """Run ``method(*args)`` on every live node, this one included; results by node id."""
        results: dict[str, Any] = {}
        local = self._methods.get(method)
        if local is None:
            raise UnknownRpcMethod(method)
        others = [n for n in await self._store.live_nodes() if n != self.node_id]
        remote: asyncio.Future[Any] | None = None
        if others:
            remote = asyncio.ensure_future(self._send(method, args, None, set(others)))
        try:
            results[self.node_id] = await local(*args)
        finally:
            if remote is not None:
                results.update(await remote)
        return results

    async def _send(
        self, method: str, args: tuple[Any, ...], connection_id: str | None, expected: set[str]
    ) -> Any:
        request_id = f"{self.node_id}:{next(self._ids)}"
        self.calls += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # The waiter exists before the request is published, so no reply can be missed.
        self._waiters[request_id] = _Waiter(future, expected, connection_id is not None)
        request = {
            "id": request_id,
            "method": method,
            "args": list(args),
            "connectionId": connection_id,
        }
        try:
            channel = self._keys.rpc_channel
            sealed = seal(
                self._key, self.node_id, jsonwire.dumps(request), channel=channel.encode()
            )
            if not await self._bus.publish(channel, sealed):
                raise self._errors.timeout()
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            self.timeouts += 1
            raise self._errors.timeout() from None
        finally:
            self._waiters.pop(request_id, None)

    def _open(self, channel: str, data: bytes, drops: DropLog) -> tuple[Opened, Any] | None:
        """The verified envelope and its decoded JSON object, or None (counted as dropped)."""
        try:
            opened = open_envelope(self._key, data, channel=channel.encode())
            message = jsonwire.loads(opened.body)
        except EnvelopeError as error:
            drops.drop(error.reason, channel)
            return None
        except ValueError:
            drops.drop(f"not JSON from {opened.sender}", channel)
            return None
        if not isinstance(message, dict) or not isinstance(message.get("id"), str):
            drops.drop(f"malformed from {opened.sender}", channel)
            return None
        return opened, message

    def _on_request(self, channel: str, data: bytes) -> None:
        found = self._open(channel, data, self._request_drops)
        if found is None:
            return
        opened, request = found
        if opened.sender == self.node_id:
            return
        connection_id = request.get("connectionId")
        if (
            not isinstance(request.get("method"), str)
            or not isinstance(request.get("args", []), list)
            or not (connection_id is None or isinstance(connection_id, str))
        ):
            self._request_drops.drop(f"malformed from {opened.sender}", channel)
            return
        if not self._first_time(opened.mac):
            self._request_drops.drop(f"replayed, from {opened.sender}", channel)
            return
        task = asyncio.create_task(self._serve(opened.sender, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _first_time(self, mac: bytes) -> bool:
        """Remember ``mac``; False when it was seen while its envelope could still verify.

        An envelope verifies for at most ``2 * MAX_AGE`` s of this node's time (its stamp
        may be up to ``MAX_AGE`` s ahead), so a MAC need not be kept any longer.
        """
        now = time.monotonic()
        order = self._served_order
        while order and order[0][0] < now:
            self._served.discard(order.popleft()[1])
        if mac in self._served:
            return False
        self._served.add(mac)
        order.append((now + 2 * MAX_AGE, mac))
        return True

    async def _serve(self, caller: str, request: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": request["id"]}
        connection_id = request.get("connectionId")
        method_name = request["method"]
        method = self._methods.get(method_name)
        if connection_id is not None and not self._owns(connection_id):
            reply["notOwner"] = True
        elif method is None:
            log.warning("refused RPC for unregistered method %r from %s", method_name, caller)
            error = UnknownRpcMethod(method_name)
            reply["error"], reply["errorType"] = str(error), "UnknownRpcMethod"
        else:
            try:
                reply["result"] = await method(*request.get("args", []))
            except Exception as error:
                reply["error"], reply["errorType"] = str(error), type(error).__name__
        channel = self._keys.node_channel(caller)
        try:
            sealed = seal(self._key, self.node_id, jsonwire.dumps(reply), channel=channel.encode())
        except EnvelopeError:
            log.warning("reply to %s's RPC %s is too large to send", caller, method_name)
            return
        await self._bus.publish(channel, sealed)

    def _on_reply(self, channel: str, data: bytes) -> None:
        found = self._open(channel, data, self._reply_drops)
        if found is None:
            return
        opened, reply = found
        waiter = self._waiters.get(reply["id"])
        if waiter is None or waiter.future.done():
            return
        node = opened.sender
        if "error" in reply:
            waiter.future.set_exception(
                self._errors.rebuild(str(reply.get("errorType")), str(reply["error"]))
            )
            return
        if waiter.for_connection:
            if reply.get("notOwner"):
                waiter.expected.discard(node)
                if not waiter.expected:
                    waiter.future.set_exception(self._errors.not_found())
            else:
                waiter.future.set_result(reply.get("result"))
            return
        waiter.results[node] = reply.get("result")
        waiter.expected.discard(node)
        if not waiter.expected:
            waiter.future.set_result(waiter.results)
