"""RPC and remote membership between nodes."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from cluster_support import PREFIX, RPC_TIMEOUT, TOKEN, Cluster, wait_until

from roomcast.cluster.envelope import derive_key, open_envelope, seal
from support import LOOPBACK

RPC_CHANNEL = f"{PREFIX}rpc"
INTRUDER_CHANNEL = f"{PREFIX}node:intruder"
BUS_KEY = derive_key(TOKEN)


def test_add_member_reaches_a_connection_on_another_node(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    alice.join("pulled")

    assert alice.action("addMember", connectionId=bob.id, room="pulled")["added"] is True
    assert bob.rooms() == ["pulled"]
    assert cluster.members("pulled") == {alice.id, bob.id}
    alice.say("pulled", "welcome, bob")
    assert bob.wait_chat(lambda m: m["room"] == "pulled")["from"] == alice.id

    assert alice.action("removeMember", connectionId=bob.id, room="pulled")["removed"] is True
    assert bob.rooms() == []
    assert cluster.members("pulled") == {alice.id}


def test_remote_membership_errors_come_back_unchanged(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    bob.join("mine")

    def add(room: str) -> Any:
        return alice.action("addMember", connectionId=bob.id, room=room).get("error")

    def remove(room: str) -> Any:
        return alice.action("removeMember", connectionId=bob.id, room=room).get("error")

    assert add("mine") == "connection already in this room (mine)"
    assert add("nowhere") == "room does not exist"
    assert remove("defaultRoom") == "connection not in this room (defaultRoom)"


def test_the_owner_nodes_join_and_leave_middleware_decide(cluster: Cluster) -> None:
    cluster.start("a")  # no middleware
    cluster.start("b", refusing=True)  # refuses joins to closed-*, leaves from sticky-*
    alice, bob = cluster.client("a"), cluster.client("b")
    alice.join("closed-club")
    bob.join("sticky-club")

    reply = alice.action("addMember", connectionId=bob.id, room="closed-club")
    assert reply["error"] == "b refuses joins to closed-club"
    assert bob.rooms() == ["sticky-club"]
    assert cluster.members("closed-club") == {alice.id}

    reply = alice.action("removeMember", connectionId=bob.id, room="sticky-club")
    assert reply["error"] == "b refuses leaves from sticky-club"
    assert bob.rooms() == ["sticky-club"]
    assert cluster.members("sticky-club") == {bob.id}

    # Node a has no such middleware: b's call about a's connection succeeds.
    reply = bob.action("addMember", connectionId=alice.id, room="sticky-club")
    assert reply["added"] is True
    reply = bob.action("removeMember", connectionId=alice.id, room="sticky-club")
    assert reply["removed"] is True
    assert alice.rooms() == ["closed-club"]


def test_destroy_removes_the_members_of_every_node(cluster: Cluster) -> None:
    for node_id in ("a", "b", "c"):
        cluster.start(node_id)
    clients = [cluster.client(n) for n in ("a", "b", "c")]
    for client in clients:
        client.join("doomed")

    assert clients[1].action("destroyRoom", room="doomed")["destroyed"] is True
    for client in clients:
        notice = client.wait_chat(lambda m: m["room"] == "doomed")
        assert notice == {
            "message": "this room has been deleted",
            "room": "doomed",
            "from": 0,
            "context": "user",
            "sentAt": notice["sentAt"],
        }
        assert client.rooms() == []
    assert clients[0].action("roomStatus", room="doomed")["error"] == "room does not exist"
    with cluster.redis() as client:
        assert client.exists(f"{PREFIX}members:doomed") == 0
        channel = f"{PREFIX}chat:doomed"
        wait_until(
            lambda: client.pubsub_numsub(channel) == [(channel, 0)],
            message="every node unsubscribed",
        )


def test_a_connection_no_node_owns_is_not_found_without_waiting(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    cluster.start("c")
    alice = cluster.client("a")
    started = time.monotonic()
    reply = alice.action("addMember", connectionId="no-such-connection", room="defaultRoom")
    assert reply["error"] == "connection not found"
    assert time.monotonic() - started < RPC_TIMEOUT / 2


def test_rpc_times_out_after_rpc_timeout(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    alice = cluster.client("a")
    with cluster.redis() as client:
        # A node that looks alive but never answers.
        client.set(f"{PREFIX}heartbeat:ghost", "1", px=60_000)
        client.sadd(f"{PREFIX}nodes", "ghost")
        started = time.monotonic()
        reply = alice.action("addMember", connectionId="no-such-connection", room="defaultRoom")
        elapsed = time.monotonic() - started
        client.delete(f"{PREFIX}heartbeat:ghost")
    assert reply["error"] == "RPC Timeout"
    assert RPC_TIMEOUT <= elapsed < RPC_TIMEOUT + 1.0


def _forged_request(token: str, method: str, args: list[Any], connection_id: str | None) -> bytes:
    request = {"id": "intruder:1", "method": method, "args": args, "connectionId": connection_id}
    body = json.dumps(request).encode()
    return seal(derive_key(token), "intruder", body, channel=RPC_CHANNEL.encode())


def _bytes_redis(cluster: Cluster) -> redis.Redis:
    """A client of the cluster's Redis that leaves messages as bytes, as nodes see them."""
    return redis.Redis(host=LOOPBACK, port=cluster.redis_server.port)


def _replies(pubsub: redis.client.PubSub, seconds: float) -> list[dict[str, Any]]:
    """The replies heard on the intruder's channel: each one's sender and JSON body."""
    replies: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None and message["type"] == "message":
            opened = open_envelope(BUS_KEY, message["data"], channel=INTRUDER_CHANNEL.encode())
            replies.append({"from": opened.sender, **json.loads(opened.body)})
    return replies


def test_rpc_requests_signed_with_another_token_are_ignored(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    bob = cluster.client("b")
    bob.action("createChatRoom", name="target")
    with _bytes_redis(cluster) as client, client.pubsub() as pubsub:
        pubsub.subscribe(INTRUDER_CHANNEL)
        forged = _forged_request("wrong-token", "chat.add_member", [bob.id, "target"], bob.id)
        assert client.publish(RPC_CHANNEL, forged) == 2  # both nodes heard it ...
        assert _replies(pubsub, 0.5) == []  # ... and neither answered
        assert bob.rooms() == []

        # With the cluster's token the same request is served: the channel was right.
        client.publish(
            RPC_CHANNEL, _forged_request(TOKEN, "chat.add_member", [bob.id, "target"], bob.id)
        )
        replies: list[dict[str, Any]] = []

        def both_answered() -> bool:
            replies.extend(_replies(pubsub, 0.1))
            return len(replies) == 2

        wait_until(both_answered, message="both nodes answered")
    assert sorted(replies, key=lambda r: r["from"]) == [
        {"from": "a", "id": "intruder:1", "notOwner": True},
        {"from": "b", "id": "intruder:1", "result": True},
    ]
    assert bob.rooms() == ["target"]
    for node in cluster.nodes.values():
        wait_until(node.logged("dropped 1 RPC request (bad signature"), message="the drop logged")


def test_only_registered_methods_can_be_called(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    with _bytes_redis(cluster) as client, client.pubsub() as pubsub:
        pubsub.subscribe(INTRUDER_CHANNEL)
        forged = _forged_request(TOKEN, "os.system", ["echo owned"], None)
        assert client.publish(RPC_CHANNEL, forged) == 2
        replies: list[dict[str, Any]] = []

        def both_refused() -> bool:
            replies.extend(_replies(pubsub, 0.2))
            return len(replies) >= 2

        wait_until(both_refused, message="both nodes refused")
    assert sorted((r["from"], r["error"]) for r in replies) == [
        ("a", "unknown RPC method (os.system)"),
        ("b", "unknown RPC method (os.system)"),
    ]
    assert all("result" not in r for r in replies)
    for node in cluster.nodes.values():
        assert "refused RPC for unregistered method 'os.system' from intruder" in node.log
