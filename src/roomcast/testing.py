"""Test helpers for roomcast users: an in-process node and connections you can inspect.

Inside an ``async def`` test (pytest-asyncio, ``asyncio_mode = "auto"``)::

    async with TestNode() as node:
        alice = await node.connect()
        await alice.verb("roomAdd", room="defaultRoom")
        await alice.verb("say", room="defaultRoom", message="hi")
        assert alice.messages[-1]["message"] == "hi"
        response = await alice.run_action("status")
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

from roomcast import jsonwire
from roomcast.api import Api
from roomcast.config import Config
from roomcast.connection import Connection
from roomcast.verbs import run_verb

_node_ids = itertools.count(1)


class TestConnection(Connection):
    """A connection with no transport (``type "test"``); what it is sent lands in ``messages``."""

    __test__ = False  # not a pytest test class
    type = "test"
    framing = "object"

    def __init__(self, api: Api, **kwargs: Any) -> None:
        super().__init__(api, **kwargs)
        self.messages: list[Any] = []
        self.closed = False

    def write_frame(self, frame: Any) -> None:
        self.messages.append(jsonwire.loads(frame))

    def close_transport(self) -> None:
        self.closed = True

    async def verb(self, verb: str, **args: Any) -> Any:
        """Run a verb as this connection; returns its data or raises its error."""
        return await run_verb(self, verb, args)

    async def run_action(self, action: str, **params: Any) -> dict[str, Any]:
        """Run an action as this connection; returns the response (``error`` on failure)."""
        return await self.api.actions.run(self, action, params)

    def chat_messages(self, room: str | None = None) -> list[dict[str, Any]]:
        """Chat messages received so far (context ``user``), optionally of one room."""
        return [
            m
            for m in self.messages
            if isinstance(m, dict)
            and m.get("context") == "user"
            and (room is None or m.get("room") == room)
        ]

    async def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 5.0) -> Any:
        """Wait until a received message satisfies ``predicate``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if predicate(message):
                    return message
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching message in {self.messages!r}")
            await asyncio.sleep(0.01)


class TestNode:
    """An in-process node with its listeners off (unless you ask) on the embedded store."""

    __test__ = False

    def __init__(self, config: Config | None = None, **overrides: Any) -> None:
        settings: dict[str, Any] = {"socket_port": 0, "web_port": 0}
        if config is None:
            settings["id"] = f"test-node-{next(_node_ids)}"
        settings.update(overrides)
        self.api = Api(config, **settings)

    async def __aenter__(self) -> TestNode:
        await self.api.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.api.stop()

    async def connect(self, **kwargs: Any) -> TestConnection:
        """Open a test connection on this node (connection middleware runs)."""
        connection = TestConnection(self.api, **kwargs)
        await self.api.connections.register(connection)
        return connection
