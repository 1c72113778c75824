"""When something fails halfway, nothing is left behind: listeners, tasks, rooms, locks."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from roomcast import Api
from roomcast.cluster.keys import Keys
from roomcast.cluster.store import Store, connect
from roomcast.testing import TestNode
from support import LOOPBACK, free_port


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((LOOPBACK, port)) == 0


async def test_a_node_whose_web_port_is_taken_closes_its_tcp_listener_and_stops_its_tasks() -> None:
    before = set(asyncio.all_tasks())
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        socket_port = free_port()
        api = Api(
            id="half-started",
            bind=LOOPBACK,
            socket_port=socket_port,
            web_port=taken.getsockname()[1],
        )
        with pytest.raises(OSError):
            await api.start()
    assert not _accepts(socket_port)
    await asyncio.sleep(0)  # let cancelled tasks finish
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert [t.get_name() for t in left] == []
    assert api.servers == []


async def test_destroying_a_room_removes_it_even_when_a_node_fails_to_evict_its_members() -> None:
    async with TestNode() as node:
        await node.api.chat_room.add("doomed")

        async def failing_evict(room: str) -> int:
            raise RuntimeError("evict exploded")

        node.api.cluster.register("chat.evict_room", failing_evict)
        await node.api.chat_room.destroy("doomed")
        assert not await node.api.chat_room.exists("doomed")


class _SlowReader(Store):
    """A store whose reaper reads slowly, so its lock expires and another node takes it."""

    async def node_memberships(self, node_id: str) -> set[tuple[str, str]]:
        lock = self.keys.reap_lock(node_id)
        while await self.redis.exists(lock):  # wait for our lock to expire
            await asyncio.sleep(0.01)
        await self.redis.set(lock, "another-reaper", px=30_000)
        return await super().node_memberships(node_id)


@pytest.fixture
async def embedded() -> AsyncIterator[Any]:
    client = connect(None)
    yield client
    await client.aclose()


async def test_a_reaper_whose_lock_expired_does_not_delete_the_lock_another_node_took(
    embedded: Any,
) -> None:
    store = _SlowReader(embedded, Keys("t:"))
    assert await store.reap_node("dead", lock_seconds=0.05) == 0
    assert await embedded.get("t:reap-lock:dead") == b"another-reaper"


async def test_a_reaper_deletes_its_own_lock_when_done(embedded: Any) -> None:
    store = Store(embedded, Keys("t:"))
    assert await store.reap_node("dead") == 0
    assert not await embedded.exists("t:reap-lock:dead")
