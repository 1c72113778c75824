"""Remote procedure calls between nodes over pub/sub.

A request goes to every node on one channel; the node that owns the connection (or every
node, for a broadcast call) runs the registered method and replies on the caller's own
channel. Errors travel as their class name and message and are rebuilt unchanged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from roomcast import jsonwire
from roomcast.cluster.bus import Bus
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
        self._token = token
        self._keys = keys
        self._bus = bus
        self._store = store
        self.timeout = timeout
        self._owns = owns_connection
        self._methods: dict[str, Method] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

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
        envelope = {
            "serverToken": self._token,
            "serverId": self.node_id,
            "id": request_id,
            "method": method,
            "args": list(args),
            "connectionId": connection_id,
        }
        try:
            if not await self._bus.publish(self._keys.rpc_channel, jsonwire.dumps(envelope)):
                raise self._errors.timeout()
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            self.timeouts += 1
            raise self._errors.timeout() from None
        finally:
            self._waiters.pop(request_id, None)

    def _on_request(self, channel: str, data: bytes) -> None:
        try:
            envelope = jsonwire.loads(data)
        except ValueError:
            log.warning("dropped undecodable RPC request")
            return
        if not isinstance(envelope, dict) or envelope.get("serverToken") != self._token:
            log.warning("dropped RPC request with a wrong serverToken")
            return
        if envelope.get("serverId") == self.node_id:
            return
        task = asyncio.create_task(self._serve(envelope))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, envelope: dict[str, Any]) -> None:
        reply: dict[str, Any] = {
            "serverToken": self._token,
            "serverId": self.node_id,
            "id": envelope.get("id"),
        }
        connection_id = envelope.get("connectionId")
        method_name = str(envelope.get("method"))
        method = self._methods.get(method_name)
        if connection_id is not None and not self._owns(str(connection_id)):
            reply["notOwner"] = True
        elif method is None:
            log.warning("refused RPC for unregistered method %r", method_name)
            error = UnknownRpcMethod(method_name)
            reply["error"], reply["errorType"] = str(error), "UnknownRpcMethod"
        else:
            try:
                reply["result"] = await method(*envelope.get("args", []))
            except Exception as error:
                reply["error"], reply["errorType"] = str(error), type(error).__name__
        caller = str(envelope.get("serverId"))
        await self._bus.publish(self._keys.node_channel(caller), jsonwire.dumps(reply))

    def _on_reply(self, channel: str, data: bytes) -> None:
        try:
            reply = jsonwire.loads(data)
        except ValueError:
            return
        if not isinstance(reply, dict) or reply.get("serverToken") != self._token:
            log.warning("dropped RPC reply with a wrong serverToken")
            return
        waiter = self._waiters.get(str(reply.get("id")))
        if waiter is None or waiter.future.done():
            return
        node = str(reply.get("serverId"))
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
