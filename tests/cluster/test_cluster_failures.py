"""Nodes and Redis failing: killed, stopped and stalled nodes; Redis restarted, flushed,
unreachable or deaf to subscribers."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster_support import (
    CONFIG,
    PREFIX,
    PRESENCE_TTL,
    RPC_TIMEOUT,
    WATCHDOG_INTERVAL,
    ChatClient,
    Cluster,
    RedisProxy,
    wait_until,
)

from support import RedisProcess

# Polling adds up to one round trip to what the nodes guarantee.
SLACK = 0.5


def _members_count(client: ChatClient, room: str) -> int:
    count: int = client.action("roomStatus", room=room)["status"]["membersCount"]
    return count


def _message_is(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message["message"] == text


def _chat_works(sender: ChatClient, listener: ChatClient, room: str, timeout: float) -> None:
    """Say numbered messages until one reaches ``listener``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    probe = uuid.uuid4().hex  # earlier probes, already received, must not count
    attempt = 0
    while True:
        attempt += 1
        text = f"probe {probe} {attempt}"
        sender.say(room, text)
        try:
            listener.wait_chat(_message_is(text), timeout=0.3)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_a_killed_nodes_members_vanish_within_presence_ttl(cluster: Cluster) -> None:
    for node_id in ("a", "b", "c"):
        cluster.start(node_id)
    alice, carol = cluster.client("a"), cluster.client("c")
    bobs = [cluster.client("b"), cluster.client("b")]
    for client in (alice, carol, *bobs):
        client.join("crash")
    bobs[0].join("other")
    assert _members_count(alice, "crash") == 4

    killed = time.monotonic()
    cluster.nodes["b"].kill()
    wait_until(
        lambda: _members_count(alice, "crash") == 2,
        timeout=PRESENCE_TTL + SLACK,
        interval=0.05,
        message="b's members reaped",
    )
    reaped_after = time.monotonic() - killed
    assert reaped_after <= PRESENCE_TTL + SLACK
    assert cluster.members("crash") == {alice.id, carol.id}
    assert cluster.members("other") == set()
    with cluster.redis() as redis:
        assert redis.smembers(f"{PREFIX}nodes") == {"a", "c"}
        assert redis.exists(f"{PREFIX}node-members:b") == 0

    # RPC about the dead node's connections fails at once, not after rpc_timeout.
    started = time.monotonic()
    reply = alice.action("addMember", connectionId=bobs[0].id, room="crash")
    assert reply["error"] == "connection not found"
    assert time.monotonic() - started < RPC_TIMEOUT / 2

    # The survivors keep chatting.
    alice.say("crash", "still here")
    assert carol.wait_chat(lambda m: m["message"] == "still here")["from"] == alice.id
    log = cluster.nodes["a"].log + cluster.nodes["c"].log
    assert "node b stopped beating; removed 3 of its memberships" in log


def test_a_node_restarted_with_the_same_id_inherits_no_ghosts(cluster: Cluster) -> None:
    # Nobody reaps within this test: whatever b's members vanish, the new b removed.
    long_ttl = CONFIG.replace(f"presence_ttl = {PRESENCE_TTL}", "presence_ttl = 60.0")
    assert long_ttl != CONFIG
    cluster.config_path.write_text(long_ttl)
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    alice.join("haunted")
    bob.join("haunted")
    cluster.nodes["b"].kill()

    cluster.restart("b")
    # Gone as soon as the new b is ready, long before presence_ttl could reap them.
    assert cluster.members("haunted") == {alice.id}
    log = cluster.nodes["b"].log
    assert "node id b is still marked alive" in log
    assert "removed 1 stale memberships of a previous run of b" in log

    newbob = cluster.client("b")
    newbob.join("haunted")
    alice.say("haunted", "hello again")
    assert newbob.wait_chat(lambda m: m["room"] == "haunted")["message"] == "hello again"
    assert cluster.members("haunted") == {alice.id, newbob.id}


def test_sigterm_of_one_node_removes_its_members_and_the_rest_go_on(cluster: Cluster) -> None:
    for node_id in ("a", "b", "c"):
        cluster.start(node_id)
    alice, bob, carol = cluster.client("a"), cluster.client("b"), cluster.client("c")
    for client in (alice, bob, carol):
        client.join("graceful")

    assert cluster.nodes["b"].stop(signal.SIGTERM) == 0
    # Removed by b itself before it exited, not by reaping later.
    assert cluster.members("graceful") == {alice.id, carol.id}
    with cluster.redis() as redis:
        assert redis.smembers(f"{PREFIX}nodes") == {"a", "c"}
        assert redis.exists(f"{PREFIX}heartbeat:b", f"{PREFIX}node-members:b") == 0
    assert "roomcast b stopped" in cluster.nodes["b"].log

    carol.say("graceful", "b has left")
    assert alice.wait_chat(lambda m: m["room"] == "graceful")["message"] == "b has left"
    assert _members_count(carol, "graceful") == 2
    started = time.monotonic()
    assert alice.action("addMember", connectionId=bob.id, room="graceful")["error"] == (
        "connection not found"
    )
    assert time.monotonic() - started < RPC_TIMEOUT / 2


def test_a_stalled_node_is_reaped_and_writes_its_members_again(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    alice.join("stall")
    bob.join("stall")

    node_b = cluster.nodes["b"]
    os.kill(node_b.pid, signal.SIGSTOP)
    try:
        wait_until(
            lambda: cluster.members("stall") == {alice.id},
            timeout=PRESENCE_TTL + SLACK,
            message="the stalled node reaped",
        )
    finally:
        os.kill(node_b.pid, signal.SIGCONT)
    wait_until(
        lambda: cluster.members("stall") == {alice.id, bob.id},
        timeout=PRESENCE_TTL,
        message="b wrote its members again",
    )
    assert "heartbeat had lapsed" in node_b.log
    _chat_works(alice, bob, "stall", timeout=5)


def test_chat_resumes_after_redis_restarts_without_restarting_nodes(cluster: Cluster) -> None:
    # At debug level a node logs every failed reconnect attempt.
    cluster.start("a", "--log-level", "debug")
    cluster.start("b", "--log-level", "debug")
    alice, alice2, bob = cluster.client("a"), cluster.client("a"), cluster.client("b")
    for client in (alice, alice2, bob):
        client.join("outage")
    bob.join("bobs-room")
    _chat_works(alice, bob, "outage", timeout=5)

    cluster.kill_redis()
    try:
        for node in cluster.nodes.values():
            wait_until(
                node.logged("Redis pub/sub connection lost"),
                message=f"{node.node_id} noticed the outage",
            )
        # Nodes stay up and keep their connections; chat on one node still works.
        alice.say("outage", "local only")
        assert alice2.wait_chat(lambda m: m["message"] == "local only")["from"] == alice.id
        assert alice.rooms() == ["outage"]
        for node in cluster.nodes.values():
            wait_until(
                node.logged("pub/sub still unavailable", times=3),
                message=f"{node.node_id} failing to reconnect three times",
            )
        assert all(node.process.poll() is None for node in cluster.nodes.values())
    finally:
        cluster.restart_redis()

    # Redis came back empty: the nodes write their rooms and members again by themselves.
    _chat_works(alice, bob, "outage", timeout=10)
    _chat_works(bob, alice2, "outage", timeout=5)
    wait_until(
        lambda: cluster.members("outage") == {alice.id, alice2.id, bob.id},
        message="members written again",
    )
    assert cluster.members("bobs-room") == {bob.id}
    with cluster.redis() as redis:
        assert {"defaultRoom", "outage", "bobs-room"} <= redis.smembers(f"{PREFIX}rooms")
        assert redis.smembers(f"{PREFIX}nodes") == {"a", "b"}
    for node in cluster.nodes.values():
        assert node.process.poll() is None
        assert "pub/sub reconnected" in node.log


def test_a_killed_pubsub_connection_is_rebuilt(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    alice.join("rebuilt")
    bob.join("rebuilt")
    with cluster.redis() as redis:
        assert redis.client_kill_filter(_type="pubsub") >= 2
    _chat_works(alice, bob, "rebuilt", timeout=5)
    _chat_works(bob, alice, "rebuilt", timeout=5)


def test_a_subscriber_that_silently_stops_hearing_is_rebuilt(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    # Pub/sub goes through a proxy that can swallow what Redis sends to subscribers.
    proxy = RedisProxy(redis_server.port)
    config = tmp_path / "roomcast.toml"
    config.write_text(CONFIG)
    group = Cluster(redis_server, config)
    try:
        group.start("a")
        group.start("b", "--pubsub-url", proxy.url)
        alice, bob = group.client("a"), group.client("b")
        alice.join("deaf")
        bob.join("deaf")
        _chat_works(alice, bob, "deaf", timeout=5)

        assert proxy.silence_subscribers() == 1  # b's one subscriber connection
        wait_until(
            lambda: "rebuilding the subscriber" in group.nodes["b"].log,
            timeout=5 * WATCHDOG_INTERVAL,
            message="the watchdog noticed",
        )
        # Only the rebuilt subscriber can hear this; the old one stays deaf.
        _chat_works(alice, bob, "deaf", timeout=5)
        assert group.nodes["b"].process.poll() is None
    finally:
        group.close()
        proxy.close()


def test_members_come_back_when_redis_loses_its_data(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    alice, bob = cluster.client("a"), cluster.client("b")
    alice.join("flushed")
    bob.join("flushed")
    with cluster.redis() as redis:
        redis.flushall()  # no reconnect: only the lapsed heartbeats tell the nodes
        wait_until(
            lambda: cluster.members("flushed") == {alice.id, bob.id},
            timeout=PRESENCE_TTL,
            message="members written again",
        )
        assert {"defaultRoom", "flushed"} <= redis.smembers(f"{PREFIX}rooms")
        assert redis.smembers(f"{PREFIX}nodes") == {"a", "b"}
    _chat_works(bob, alice, "flushed", timeout=3)


def test_a_node_starts_without_redis_and_joins_the_cluster_when_it_comes(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.kill_redis()
    late = cluster.start("b")  # still becomes ready, serving its own clients
    assert "Redis unreachable at start" in late.log
    bob = cluster.client("b")
    assert bob.rooms() == []
    cluster.restart_redis()
    alice = cluster.client("a")
    wait_until(
        lambda: alice.request("roomAdd defaultRoom")["status"] == "OK",
        message="a writes defaultRoom again",
    )
    wait_until(
        lambda: bob.request("roomAdd defaultRoom")["status"] == "OK", message="b can use Redis"
    )
    _chat_works(alice, bob, "defaultRoom", timeout=5)
    assert cluster.members("defaultRoom") == {alice.id, bob.id}


def test_a_node_stops_cleanly_while_redis_is_down(cluster: Cluster) -> None:
    node = cluster.start("a")
    alice = cluster.client("a")
    alice.join("offline")
    cluster.kill_redis()
    wait_until(lambda: "Redis pub/sub connection lost" in node.log, message="outage noticed")
    started = time.monotonic()
    assert node.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    assert "roomcast a stopped" in node.log


def test_leaves_during_a_partition_reach_redis_when_it_is_reachable_again(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    # Node a reaches Redis through a proxy that can cut it off; Redis keeps its data.
    proxy = RedisProxy(redis_server.port)
    config = tmp_path / "roomcast.toml"
    config.write_text(CONFIG)
    group = Cluster(redis_server, config)
    try:
        group.start("a", "--redis-url", proxy.url, "--pubsub-url", proxy.url)
        group.start("b")
        alice, leaver, bob = group.client("a"), group.client("a"), group.client("b")
        for client in (alice, leaver, bob):
            client.join("split")

        proxy.cut()
        leaver.quit()
        wait_until(lambda: "not removed" in group.nodes["a"].log, message="failed write")
        assert group.members("split") == {alice.id, leaver.id, bob.id}  # stale, for now
        proxy.mend()

        wait_until(
            lambda: group.members("split") == {alice.id, bob.id},
            timeout=PRESENCE_TTL,
            message="the stale membership removed",
        )
        _chat_works(bob, alice, "split", timeout=5)
    finally:
        group.close()
        proxy.close()
