"""roomcast on a real Redis Cluster (3 masters, 3 replicas): hash-tagged keys, sharded
pub/sub, and a master's failover.

One Redis Cluster serves the whole file (a session fixture); each test starts its own
roomcast nodes and uses room names of its own. The two failover tests come last: each
kills a master and starts it again as a replica before the next one runs.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from cluster_support import CONFIG, PRESENCE_TTL, TOKEN, ChatClient, Cluster, RedisProxy, wait_until
from redis_cluster_support import RedisClusterProcesses, cluster_binaries, start_redis_cluster

from roomcast.cluster import Keys, ShardedBus
from roomcast.cluster.connect import connect_cluster
from support import LOOPBACK

pytestmark = pytest.mark.skipif(
    cluster_binaries() is None, reason="redis-server and redis-cli are needed"
)

PREFIX = "roomcast:"
# Room names are picked so their channels land on different masters.
ROOM_CANDIDATES = 300
# Every probe message of the file has its own text, so an old one never passes for new.
_PROBES = itertools.count(1)


@dataclass
class _Seed:
    """What ``Cluster`` needs of a Redis: the URL its nodes are given."""

    url: str


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    cluster = start_redis_cluster(masters=3)
    yield cluster
    cluster.stop()


@pytest.fixture
def nodes(redis_cluster: RedisClusterProcesses, tmp_path: Path) -> Iterator[Cluster]:
    """No roomcast node yet; ``nodes.start(id, "--redis-cluster")`` adds one."""
    redis_cluster.wait_healthy()
    config = tmp_path / "roomcast.toml"
    config.write_text(CONFIG)
    group = Cluster(_Seed(redis_cluster.seed_url), config)  # type: ignore[arg-type]
    yield group
    group.close()


def _start(nodes: Cluster, *node_ids: str) -> None:
    for node_id in node_ids:
        nodes.start(node_id, "--redis-cluster")


def _channel(room: str) -> str:
    return f"{PREFIX}chat:{{{room}}}"


def _rooms_by_master(redis_cluster: RedisClusterProcesses, stem: str) -> dict[int, str]:
    """One room name per master whose channel (and keys) that master serves."""
    masters = redis_cluster.masters()
    rooms: dict[int, str] = {}
    for i in range(ROOM_CANDIDATES):
        room = f"{stem}{i}"
        rooms.setdefault(redis_cluster.master_of(_channel(room)), room)
        if len(rooms) == len(masters):
            return rooms
    raise AssertionError(f"no room of {stem!r} on every master")


def _chat_works(sender: ChatClient, listener: ChatClient, room: str, timeout: float) -> float:
    """Say numbered messages until one reaches ``listener``; the seconds it took."""
    started = time.monotonic()
    while True:
        text = f"probe {next(_PROBES)}"
        sender.request(f"say {room} {text}")  # may fail while Redis fails over
        try:
            listener.wait_chat(functools.partial(_says, text), timeout=0.3)
            return time.monotonic() - started
        except AssertionError:
            if time.monotonic() - started > timeout:
                raise


def test_says_reach_every_member_on_three_nodes_in_rooms_on_every_shard(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    _start(nodes, "a", "b", "c")
    rooms = sorted(_rooms_by_master(redis_cluster, "spread").values())
    members = {(room, n): nodes.client(n) for room in rooms for n in ("a", "b", "c")}
    for (room, _), client in members.items():
        client.join(room)

    for room, sender_node in zip(rooms, ("a", "b", "c"), strict=True):
        members[(room, sender_node)].say(room, f"hello {room}")
    for (room, _), client in members.items():
        client.wait_chat(functools.partial(_says, f"hello {room}"))
    for client in members.values():
        client.drain(0.3)
    for (room, node), client in members.items():
        assert [m["message"] for m in client.chat()] == [f"hello {room}"], (room, node)


def test_a_rooms_keys_and_channel_share_one_hash_slot(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    _start(nodes, "a")
    alice = nodes.client("a")
    alice.join("slotted")

    with redis_cluster.client() as client:
        assert client.hkeys(f"{PREFIX}members:{{slotted}}") == [alice.id]
        assert client.exists(f"{PREFIX}members:slotted") == 0  # the single-Redis name
        assert f"{alice.id} slotted" in client.smembers(f"{PREFIX}node-members:{{a}}")
        assert "slotted" in client.smembers(f"{PREFIX}rooms")
    slot = redis_cluster.keyslot("slotted")
    assert redis_cluster.keyslot(f"{PREFIX}members:{{slotted}}") == slot
    assert redis_cluster.keyslot(_channel("slotted")) == slot
    assert redis_cluster.keyslot(f"{PREFIX}heartbeat:{{a}}") == redis_cluster.keyslot("a")


def test_room_channels_are_shard_channels_of_the_owning_master_only(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    _start(nodes, "a")
    alice = nodes.client("a")
    rooms = _rooms_by_master(redis_cluster, "sharded")
    for room in rooms.values():
        alice.join(room)

    for master, room in rooms.items():
        others = [rooms[m] for m in rooms if m != master]
        with redis_cluster.node(master) as node:
            shard_channels = set(node.pubsub_shardchannels(f"{PREFIX}chat:*"))
            assert _channel(room) in shard_channels
            assert not {_channel(r) for r in others} & shard_channels
    for port in redis_cluster.live_ports():  # replicas too
        with redis_cluster.node(port) as node:
            assert node.pubsub_channels(f"{PREFIX}*") == []


def test_a_node_has_one_subscriber_connection_per_shard(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    _start(nodes, "a")
    alice = nodes.client("a")
    for room in (
        *_rooms_by_master(redis_cluster, "one").values(),
        *_rooms_by_master(redis_cluster, "two").values(),
    ):
        alice.join(room)

    for master in redis_cluster.masters():
        with redis_cluster.node(master) as node:
            subscribers = [
                entry
                for entry in node.client_list()
                if entry.get("name") == "roomcast:a" and int(entry.get("ssub", 0)) > 0
            ]
        assert len(subscribers) == 1, master
        assert int(subscribers[0]["ssub"]) >= 2, master  # its two rooms at least


def test_roomcast_rooms_reads_the_rooms_of_a_redis_cluster(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    _start(nodes, "a")
    nodes.client("a").join("listed-rc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    seed = ["--redis-cluster", "--redis-url", redis_cluster.seed_url]
    done = subprocess.run(
        [sys.executable, "-m", "roomcast", "rooms", "--json", *seed],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert {"room": "listed-rc", "members": 1} in json.loads(done.stdout)


def test_room_status_on_one_node_lists_members_of_every_node(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    _start(nodes, "a", "b", "c")
    clients = {n: [nodes.client(n) for _ in range(count)] for n, count in (("a", 1), ("b", 2))}
    for group in clients.values():
        for client in group:
            client.join("counted-rc")
    everyone = {c.id for group in clients.values() for c in group}

    watcher = nodes.client("c")
    status = watcher.action("roomStatus", room="counted-rc")["status"]
    assert status["membersCount"] == 3
    assert set(status["members"]) == everyone


def test_add_member_joins_a_connection_of_another_node(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    _start(nodes, "a", "b")
    alice, bob = nodes.client("a"), nodes.client("b")
    alice.join("pulled-rc")

    assert alice.action("addMember", connectionId=bob.id, room="pulled-rc")["added"] is True
    assert bob.rooms() == ["pulled-rc"]
    alice.say("pulled-rc", "welcome, bob")
    assert bob.wait_chat(lambda m: m["room"] == "pulled-rc")["from"] == alice.id
    assert alice.action("removeMember", connectionId=bob.id, room="pulled-rc")["removed"] is True
    assert bob.rooms() == []


def test_members_of_a_killed_node_are_reaped(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    _start(nodes, "a", "b")
    alice = nodes.client("a")
    bobs = [nodes.client("b"), nodes.client("b")]
    rooms = sorted(_rooms_by_master(redis_cluster, "crash").values())
    for room in rooms:
        for client in (alice, *bobs):
            client.join(room)

    killed = time.monotonic()
    nodes.nodes["b"].kill()
    for room in rooms:
        wait_until(
            functools.partial(_members_count_is, alice, room, 1),
            timeout=PRESENCE_TTL + 1.0,
            message=f"b's members of {room} reaped",
        )
    assert time.monotonic() - killed <= PRESENCE_TTL + 1.0
    with redis_cluster.client() as client:
        assert "b" not in client.smembers(f"{PREFIX}nodes")
        assert client.exists(f"{PREFIX}node-members:{{b}}") == 0


async def test_a_deaf_shard_subscriber_is_found_by_its_watchdog_and_rebuilt(
    redis_cluster: RedisClusterProcesses,
) -> None:
    interval = 0.2
    proxies: dict[int, RedisProxy] = {}

    def through_proxy(host: str, port: int) -> aioredis.Redis:
        proxy = proxies.setdefault(port, RedisProxy(port))
        return aioredis.Redis(host=LOOPBACK, port=proxy.port)

    keys = Keys(cluster=True)
    publisher = connect_cluster(redis_cluster.seed_url)
    bus = ShardedBus(
        publisher,
        connect_node=through_proxy,
        watchdog_channel=lambda salt: keys.shard_watchdog_channel("deaf-test", salt),
        watchdog_interval=interval,
    )
    rooms = _rooms_by_master(redis_cluster, "deaf")
    heard: list[tuple[str, bytes]] = []

    async def all_heard(text: bytes) -> None:
        for room in rooms.values():
            assert await bus.publish(_channel(room), text)
        deadline = time.monotonic() + 5
        while {c for c, d in heard if d == text} != {_channel(r) for r in rooms.values()}:
            assert time.monotonic() < deadline, f"not every shard heard {text!r}: {heard}"
            await asyncio.sleep(0.02)

    try:
        await bus.start()
        for room in rooms.values():
            await bus.subscribe(_channel(room), lambda channel, data: heard.append((channel, data)))
        await all_heard(b"before")

        victim = sorted(rooms)[0]
        assert proxies[victim].silence_subscribers() == 1  # one connection for that shard
        deadline = time.monotonic() + 10 * interval
        while bus.reconnects == 0:
            assert time.monotonic() < deadline, "the deaf shard was not rebuilt"
            await asyncio.sleep(0.02)
        await all_heard(b"after")
        await asyncio.sleep(5 * interval)
        assert bus.reconnects == 1  # only the deaf shard was rebuilt
    finally:
        await bus.stop()
        await publisher.aclose()
        for proxy in proxies.values():
            proxy.close()


def test_chat_follows_a_manual_failover(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    _start(nodes, "a", "b")
    room = "handover-rc"
    alice, bob = nodes.client("a"), nodes.client("b")
    alice.join(room)
    bob.join(room)
    _chat_works(alice, bob, room, timeout=5)
    master = redis_cluster.master_of(_channel(room))
    replica = redis_cluster.replicas_of(master)[0]

    with redis_cluster.node(replica) as node:
        node.execute_command("CLUSTER FAILOVER")
    wait_until(
        lambda: redis_cluster.master_of(_channel(room)) == replica,
        timeout=10,
        message="the replica promoted",
    )
    assert _chat_works(alice, bob, room, timeout=10) < 10
    # The old master told the subscribers it no longer serves the room's slot.
    assert "no longer serves" in nodes.nodes["b"].log
    with redis_cluster.node(replica) as node:
        assert node.pubsub_shardnumsub(_channel(room)) == [(_channel(room), 2)]


def test_chat_in_rooms_of_other_shards_goes_on_while_a_master_is_down(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    _start(nodes, "a", "b")
    rooms = _rooms_by_master(redis_cluster, "bystander")
    alice, bob = nodes.client("a"), nodes.client("b")
    for room in rooms.values():
        alice.join(room)
        bob.join(room)
    victim, *others = sorted(rooms)

    redis_cluster.kill(victim)
    try:
        # Before its replica is elected (node timeout 2 s), the other shards serve.
        for master in others:
            took = _chat_works(alice, bob, rooms[master], timeout=1.5)
            assert took < 1.5
    finally:
        redis_cluster.restart(victim)  # it rejoins as a replica of the new master


def test_chat_resumes_after_the_master_of_a_busy_room_is_killed(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    _start(nodes, "a", "b", "c")
    busy = "busy-rc"
    master = redis_cluster.master_of(_channel(busy))
    sender, listener, third = nodes.client("a"), nodes.client("b"), nodes.client("c")
    for client in (sender, listener, third):
        client.join(busy)
    _chat_works(sender, listener, busy, timeout=5)
    pids = {n: node.pid for n, node in nodes.nodes.items()}

    killed = time.monotonic()
    redis_cluster.kill(master)
    try:
        _chat_works(sender, listener, busy, timeout=30)
        _chat_works(sender, third, busy, timeout=30 - (time.monotonic() - killed))
        assert time.monotonic() - killed < 30
        assert redis_cluster.master_of(_channel(busy)) != master  # its replica took over
        # No node restarted, no client was dropped.
        assert {n: node.pid for n, node in nodes.nodes.items()} == pids
        assert all(node.process.poll() is None for node in nodes.nodes.values())
        assert sender.rooms() == listener.rooms() == third.rooms() == [busy]
    finally:
        redis_cluster.restart(master)


def _says(text: str, message: dict[str, Any]) -> bool:
    return bool(message["message"] == text)


def _members_count_is(client: ChatClient, room: str, count: int) -> bool:
    return bool(client.action("roomStatus", room=room)["status"]["membersCount"] == count)


def test_the_emitter_broadcasts_to_members_on_every_shard(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    from roomcast.emitter import SyncEmitter

    _start(nodes, "a", "b")
    rooms = sorted(_rooms_by_master(redis_cluster, "emit").values())
    members = {(room, n): nodes.client(n) for room in rooms for n in ("a", "b")}
    for (room, _), client in members.items():
        client.join(room)
    with SyncEmitter(
        redis_cluster.seed_url, server_token=TOKEN, key_prefix=PREFIX, redis_cluster=True
    ) as emitter:
        for room in rooms:
            emitter.broadcast(room, f"emitted {room}")
    for (room, _), client in members.items():
        said = client.wait_chat(functools.partial(_says, f"emitted {room}"))
        assert said["from"] == 0


def test_the_emitter_keeps_a_broadcast_into_a_history_room_on_every_shard(
    redis_cluster: RedisClusterProcesses, nodes: Cluster
) -> None:
    from roomcast.emitter import Emitter

    nodes.config_path.write_text(
        CONFIG + '\n[chat]\nhistory_size = 10\nhistory_rooms = ["kept*"]\n'
    )
    _start(nodes, "a", "b")
    rooms = sorted(_rooms_by_master(redis_cluster, "kept").values())
    members = {(room, n): nodes.client(n) for room in rooms for n in ("a", "b")}
    for (room, _), client in members.items():
        client.join(room)

    async def broadcast() -> None:
        async with Emitter(
            redis_cluster.seed_url,
            server_token=TOKEN,
            key_prefix=PREFIX,
            redis_cluster=True,
            history_size=10,
            history_rooms=["kept*"],
        ) as emitter:
            for room in rooms:
                await emitter.broadcast(room, f"kept {room}")

    asyncio.run(broadcast())
    for (room, _), client in members.items():
        said = client.wait_chat(functools.partial(_says, f"kept {room}"))
        assert said["from"] == 0 and said["offset"] == 1
        history = client.request(f"roomHistory {room}")["data"]
        assert [m["message"] for m in history["messages"]] == [f"kept {room}"]
        assert history["epoch"] == said["epoch"]
