"""``roomcast.emitter``: broadcasting from a process that runs no node."""

from __future__ import annotations

import pytest
from cluster_support import PREFIX, TOKEN, Cluster

from roomcast.emitter import Emitter, SyncEmitter


def test_a_sync_broadcast_reaches_every_member_on_every_node_once(cluster: Cluster) -> None:
    cluster.start("emit-a")
    cluster.start("emit-b")
    alice, bob = cluster.client("emit-a"), cluster.client("emit-b")
    alice.join("orders")
    bob.join("orders", create=False)
    with SyncEmitter(cluster.redis_server.url, server_token=TOKEN, key_prefix=PREFIX) as emitter:
        emitter.broadcast("orders", {"id": 42, "status": "shipped"})
    for client in (alice, bob):
        said = client.wait_chat(lambda m: m["room"] == "orders")
        assert said["message"] == {"id": 42, "status": "shipped"} and said["from"] == 0
        client.drain(0.3)
        assert len(client.chat("orders")) == 1  # exactly once


async def test_room_status_and_rooms_read_the_cluster(cluster: Cluster) -> None:
    cluster.start("emit-a")
    alice = cluster.client("emit-a")
    alice.join("status-room")
    async with Emitter(cluster.redis_server.url, server_token=TOKEN, key_prefix=PREFIX) as emitter:
        assert "status-room" in await emitter.rooms()
        status = await emitter.room_status("status-room")
        assert status["room"] == "status-room" and status["membersCount"] == 1
        assert set(status["members"]) == {alice.id}
        assert status["members"][alice.id]["id"] == alice.id
        with pytest.raises(LookupError, match="room does not exist"):
            await emitter.room_status("no-such-room")


def test_a_broadcast_signed_with_another_token_reaches_nobody(cluster: Cluster) -> None:
    cluster.start("emit-a")
    alice = cluster.client("emit-a")
    alice.join("guarded")
    with SyncEmitter(cluster.redis_server.url, server_token="wrong", key_prefix=PREFIX) as bad:
        bad.broadcast("guarded", "forged")
    alice.drain(0.5)
    assert alice.chat("guarded") == []
