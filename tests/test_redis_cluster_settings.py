"""The --redis-cluster setting and the key layout it selects (no Redis needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from redis.crc import key_slot

from roomcast.cluster.keys import Keys
from roomcast.config import CLUSTER_NEEDS_REDIS, ConfigError, load_config

TRICKY = ["lobby", "a}b", "{x", "}starts-with-brace", "x{y}z", "two words", "ünï"]


def test_single_redis_names_are_the_plain_layout() -> None:
    keys = Keys("roomcast:")
    assert [
        keys.rooms,
        keys.members("lobby"),
        keys.nodes,
        keys.heartbeat("n1"),
        keys.node_members("n1"),
        keys.reap_lock("n1"),
        keys.room_channel("lobby"),
        keys.rpc_channel,
        keys.node_channel("n1"),
        keys.watchdog_channel("n1"),
    ] == [
        "roomcast:rooms",
        "roomcast:members:lobby",
        "roomcast:nodes",
        "roomcast:heartbeat:n1",
        "roomcast:node-members:n1",
        "roomcast:reap-lock:n1",
        "roomcast:chat:lobby",
        "roomcast:rpc",
        "roomcast:node:n1",
        "roomcast:watchdog:n1",
    ]


def test_cluster_names_put_the_room_or_node_in_a_hash_tag() -> None:
    keys = Keys("roomcast:", cluster=True)
    assert [
        keys.rooms,
        keys.members("lobby"),
        keys.heartbeat("n1"),
        keys.node_members("n1"),
        keys.room_channel("lobby"),
        keys.rpc_channel,
        keys.node_channel("n1"),
        keys.shard_watchdog_channel("n1", 3),
    ] == [
        "roomcast:rooms",
        "roomcast:members:{lobby}",
        "roomcast:heartbeat:{n1}",
        "roomcast:node-members:{n1}",
        "roomcast:chat:{lobby}",
        "roomcast:rpc",
        "roomcast:node:{n1}",
        "roomcast:probe:{3:n1}",
    ]


@pytest.mark.parametrize("room", TRICKY)
def test_every_cluster_name_of_one_room_hashes_to_one_slot(room: str) -> None:
    keys = Keys("roomcast:", cluster=True)
    names = [keys.members(room), keys.room_channel(room), keys.room_key("history", room)]
    assert len({key_slot(name.encode()) for name in names}) == 1, names


@pytest.mark.parametrize("node", TRICKY)
def test_every_cluster_name_of_one_node_hashes_to_one_slot(node: str) -> None:
    keys = Keys("roomcast:", cluster=True)
    names = [keys.heartbeat(node), keys.node_members(node), keys.reap_lock(node)]
    names.append(keys.node_channel(node))
    assert len({key_slot(name.encode()) for name in names}) == 1, names


@pytest.mark.parametrize("cluster", [False, True])
def test_room_of_channel_gives_back_the_room_in_both_layouts(cluster: bool) -> None:
    keys = Keys("roomcast:", cluster=cluster)
    assert [keys.room_of_channel(keys.room_channel(room)) for room in TRICKY] == TRICKY


def test_cluster_names_of_different_rooms_differ() -> None:
    keys = Keys("roomcast:", cluster=True)
    rooms = [*TRICKY, "~{~}x", "}x", "~{~}}x"]
    assert len({keys.members(room) for room in rooms}) == len(rooms)


def test_cluster_keys_refuse_a_prefix_with_a_brace() -> None:
    with pytest.raises(ValueError, match="braces"):
        Keys("app{1}:", cluster=True)


def test_redis_cluster_refuses_a_key_prefix_with_a_brace(tmp_path: Path) -> None:
    settings = tmp_path / "roomcast.toml"
    settings.write_text('redis_cluster = true\n[cluster]\nkey_prefix = "app{1}:"\n')
    with pytest.raises(ConfigError, match="key_prefix"):
        load_config({"redis_url": "redis://127.0.0.1:7000"}, env={}, config_file=settings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("YES", True), ("0", False), ("false", False)],
)
def test_redis_cluster_is_read_from_the_environment(text: str, expected: bool) -> None:
    env = {"ROOMCAST_REDIS_CLUSTER": text, "ROOMCAST_REDIS_URL": "redis://127.0.0.1:7000"}
    assert load_config(env=env).redis_cluster is expected


def test_redis_cluster_refuses_a_word_it_does_not_know() -> None:
    env = {"ROOMCAST_REDIS_CLUSTER": "maybe", "ROOMCAST_REDIS_URL": "redis://127.0.0.1:7000"}
    with pytest.raises(ConfigError, match="redis_cluster must be true or false"):
        load_config(env=env)


def test_redis_cluster_is_read_from_the_config_file(tmp_path: Path) -> None:
    settings = tmp_path / "roomcast.toml"
    settings.write_text('redis_cluster = true\nredis_url = "redis://127.0.0.1:7000"\n')
    assert load_config(env={}, config_file=settings).redis_cluster is True


def test_redis_cluster_without_redis_url_exits_2_naming_both_settings() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "roomcast", "start", "--redis-cluster"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert CLUSTER_NEEDS_REDIS in done.stderr
    assert "--redis-cluster" in done.stderr and "--redis-url" in done.stderr


@pytest.mark.parametrize(
    ("url", "complaint"),
    [("unix:///tmp/redis.sock", "redis:// or rediss://"), ("redis://h:7000/3", "database")],
)
def test_redis_cluster_refuses_urls_a_cluster_cannot_serve(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_config({"redis_url": url, "redis_cluster": True}, env={})
