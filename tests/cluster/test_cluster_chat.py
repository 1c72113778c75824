"""Chat across nodes sharing a real Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cluster_support import (
    PREFIX,
    TOKEN,
    Cluster,
    forge_publish,
    subscriber_channels,
    wait_until,
)

from roomcast.cluster.envelope import derive_key, seal
from support import RedisProcess

# How long a test listens for what must not arrive (a second copy, a forgery) after a fence.
NOTHING_MORE_WITHIN = 0.3


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_say_reaches_every_member_on_every_node_exactly_once(cluster: Cluster) -> None:
    for node_id in ("a", "b", "c"):
        cluster.start(node_id)
    members = [cluster.client(n) for n in ("a", "a", "b", "c")]
    for member in members:
        member.join("lobby")
    sender = members[2]  # on node b

    before = _now_ms()
    sender.say("lobby", "hello cluster")
    after = _now_ms()
    for member in members:
        member.wait_chat(lambda m: m["message"] == "hello cluster")
    sender.say("lobby", "fence")
    for member in members:
        member.wait_chat(lambda m: m["message"] == "fence")
        member.drain(NOTHING_MORE_WITHIN)

    received = [
        [m for m in member.chat("lobby") if m["message"] == "hello cluster"] for member in members
    ]
    assert [len(got) for got in received] == [1, 1, 1, 1]
    first = received[0][0]
    assert set(first) == {"message", "room", "from", "context", "sentAt"}
    assert first["message"] == "hello cluster"
    assert first["room"] == "lobby"
    assert first["from"] == sender.id
    assert first["context"] == "user"
    assert before <= first["sentAt"] <= after
    assert all(got[0] == first for got in received)  # same sentAt everywhere


def test_messages_of_one_sender_arrive_in_order_on_other_nodes(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    sender, listener = cluster.client("a"), cluster.client("b")
    sender.join("ordered")
    listener.join("ordered")
    for i in range(20):
        sender.say("ordered", f"m{i}")
    listener.wait_chat(lambda m: m["message"] == "m19")
    assert [m["message"] for m in listener.chat("ordered")] == [f"m{i}" for i in range(20)]


def test_pubsub_and_key_store_can_be_two_redis_servers(
    redis_server: RedisProcess, second_redis: RedisProcess, tmp_path: Path
) -> None:
    config = tmp_path / "roomcast.toml"
    from cluster_support import CONFIG

    config.write_text(CONFIG)
    group = Cluster(redis_server, config, pubsub_server=second_redis)
    try:
        group.start("a")
        group.start("b")
        alice, bob = group.client("a"), group.client("b")
        alice.join("split")
        bob.join("split")
        alice.say("split", "over the pub/sub server")
        assert bob.wait_chat(lambda m: m["room"] == "split")["message"] == (
            "over the pub/sub server"
        )

        with group.redis() as store, group.pubsub_redis() as pubsub:
            # Members live in the key store only ...
            assert store.hkeys(f"{PREFIX}members:split") != []
            assert pubsub.exists(f"{PREFIX}members:split") == 0
            # ... and the channels on the pub/sub server only.
            assert pubsub.pubsub_numsub(f"{PREFIX}chat:split") == [(f"{PREFIX}chat:split", 2)]
            assert store.pubsub_numsub(f"{PREFIX}chat:split") == [(f"{PREFIX}chat:split", 0)]
            assert store.pubsub_channels() == []
    finally:
        group.close()


def test_a_node_without_members_in_a_room_is_not_subscribed_to_it(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    alice.join("quiet")
    channel = f"{PREFIX}chat:quiet"
    with cluster.redis() as redis:
        wait_until(
            lambda: redis.pubsub_numsub(channel) == [(channel, 1)], message="only node a subscribed"
        )
        base_b = subscriber_channels(redis, "b")
        base_a = subscriber_channels(redis, "a")
        # rpc, node reply and watchdog channels, plus "quiet" on a only.
        assert (base_a, base_b) == (4, 3)

        alice.say("quiet", "nobody on b listens")
        alice.wait_chat(lambda m: m["message"] == "nobody on b listens")
        bob.drain(NOTHING_MORE_WITHIN)
        assert bob.chat() == []

        bob.join("quiet")
        wait_until(
            lambda: redis.pubsub_numsub(channel) == [(channel, 2)],
            message="node b subscribed once its first member joined",
        )
        assert subscriber_channels(redis, "b") == 4
        alice.say("quiet", "now b hears")
        assert bob.wait_chat(lambda m: m["room"] == "quiet")["message"] == "now b hears"

        bob.leave("quiet")
        wait_until(
            lambda: redis.pubsub_numsub(channel) == [(channel, 1)],
            message="node b unsubscribed once its last member left",
        )
        assert subscriber_channels(redis, "b") == 3


def test_room_status_counts_members_of_every_node(cluster: Cluster) -> None:
    for node_id in ("a", "b", "c"):
        cluster.start(node_id)
    clients = {
        n: [cluster.client(n) for _ in range(count)] for n, count in (("a", 1), ("b", 2), ("c", 3))
    }
    for group in clients.values():
        for client in group:
            client.join("counted")
    everyone = {c.id for group in clients.values() for c in group}

    for node_id, group in clients.items():
        status = group[0].request("roomView counted")["data"]
        assert status["room"] == "counted", node_id
        assert status["membersCount"] == 6, node_id
        assert set(status["members"]) == everyone, node_id
        some = next(iter(status["members"].values()))
        assert set(some) == {"id", "joinedAt"}

    clients["c"][0].leave("counted")
    status = clients["a"][0].action("roomStatus", room="counted")["status"]
    assert status["membersCount"] == 5
    assert clients["c"][0].id not in status["members"]


def test_chat_messages_signed_with_another_token_are_ignored(cluster: Cluster) -> None:
    cluster.start("a")
    listener = cluster.client("a")
    listener.join("guarded")
    channel = f"{PREFIX}chat:guarded"
    body = {
        "message": "forged",
        "room": "guarded",
        "from": "mallory",
        "context": "user",
        "sentAt": 1,
    }

    def envelope(token: str, text: str) -> bytes:
        data = json.dumps({**body, "message": text}).encode()
        return seal(derive_key(token), "intruder", data, channel=channel.encode())

    with cluster.redis() as redis:
        assert forge_publish(redis, channel, envelope("wrong-token", "forged")) == 1
        assert forge_publish(redis, channel, b"not json at all") == 1
        # The same envelope with the right token is delivered: the channel was right.
        assert forge_publish(redis, channel, envelope(TOKEN, "token ok")) == 1
    listener.wait_chat(lambda m: m["message"] == "token ok")
    listener.drain(NOTHING_MORE_WITHIN)
    assert [m["message"] for m in listener.chat("guarded")] == ["token ok"]
    wait_until(
        lambda: "bad signature" in cluster.nodes["a"].log, message="the dropped message logged"
    )


def test_every_node_serves_the_same_rooms(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    assert alice.action("createChatRoom", name="shared")["didCreate"] is True
    assert bob.action("createChatRoom", name="shared")["error"] == "room exists"
    bob.join("shared")
    alice.join("shared")
    bob.say("shared", "made on a, said on b")
    assert alice.wait_chat(lambda m: m["room"] == "shared")["from"] == bob.id
