"""``roomcast rooms | room NAME | nodes | say``: a live cluster seen through its Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cluster_support import CONFIG, PREFIX, TOKEN, Cluster

from support import free_port


def roomcast(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    env.update(variables)
    return subprocess.run(
        [sys.executable, "-m", "roomcast", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def as_json(cluster: Cluster, *args: str) -> Any:
    done = roomcast(*args, "--redis-url", cluster.redis_server.url, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_rooms_lists_every_room_with_its_member_count(cluster: Cluster) -> None:
    cluster.start("ops-a")
    cluster.start("ops-b")
    alice, bob = cluster.client("ops-a"), cluster.client("ops-b")
    alice.join("ops-lobby")
    bob.join("ops-lobby", create=False)
    assert {"room": "ops-lobby", "members": 2} in as_json(cluster, "rooms")
    assert {"room": "defaultRoom", "members": 0} in as_json(cluster, "rooms")


def test_rooms_prints_a_table_by_default(cluster: Cluster) -> None:
    cluster.start("ops-a")
    cluster.client("ops-a").join("ops-table")
    done = roomcast("rooms", "--redis-url", cluster.redis_server.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ROOM", "MEMBERS"]
    assert ["ops-table", "1"] in [line.split() for line in lines[1:]]


def test_room_shows_each_member_with_its_node_and_join_time(cluster: Cluster) -> None:
    cluster.start("ops-a")
    cluster.start("ops-b")
    alice, bob = cluster.client("ops-a"), cluster.client("ops-b")
    alice.join("ops-members")
    bob.join("ops-members", create=False)
    rows = as_json(cluster, "room", "ops-members")
    assert {(r["id"], r["node"]) for r in rows} == {(alice.id, "ops-a"), (bob.id, "ops-b")}
    assert all(r["joinedAt"].startswith("20") for r in rows)


def test_room_of_a_missing_room_exits_1_saying_so(cluster: Cluster) -> None:
    done = roomcast("room", "no-such-room", "--redis-url", cluster.redis_server.url)
    assert done.returncode == 1
    assert "room does not exist (no-such-room)" in done.stderr


def test_nodes_lists_live_nodes_with_members_and_last_heartbeat(cluster: Cluster) -> None:
    cluster.start("ops-a")
    cluster.start("ops-b")
    cluster.client("ops-a").join("ops-nodes")
    rows = {r["node"]: r for r in as_json(cluster, "nodes")}
    assert set(rows) == {"ops-a", "ops-b"}
    assert rows["ops-a"]["members"] == 1 and rows["ops-b"]["members"] == 0
    assert rows["ops-a"]["lastHeartbeat"].startswith("20")


def test_say_reaches_members_on_every_node_as_a_message_from_0(cluster: Cluster) -> None:
    cluster.start("ops-a")
    cluster.start("ops-b")
    alice, bob = cluster.client("ops-a"), cluster.client("ops-b")
    alice.join("ops-say")
    bob.join("ops-say", create=False)
    done = roomcast(
        "say",
        "ops-say",
        "maintenance at noon",
        "--redis-url",
        cluster.redis_server.url,
        "--server-token",
        TOKEN,
        "--key-prefix",
        PREFIX,
    )
    assert done.returncode == 0, done.stderr
    for client in (alice, bob):
        said = client.wait_chat(lambda m: m["room"] == "ops-say")
        assert said["message"] == "maintenance at noon" and said["from"] == 0
        assert set(said) == {"message", "room", "from", "context", "sentAt"}


@pytest.mark.parametrize("given", ["--config", "ROOMCAST_CONFIG"])
def test_say_into_a_history_room_reads_the_nodes_config_and_keeps_the_message(
    cluster: Cluster, given: str
) -> None:
    cluster.config_path.write_text(
        CONFIG + '\n[chat]\nhistory_size = 10\nhistory_rooms = ["kept-*"]\n'
    )
    cluster.start("ops-a")
    cluster.start("ops-b")
    alice, bob = cluster.client("ops-a"), cluster.client("ops-b")
    alice.join("kept-ops")
    bob.join("kept-ops", create=False)
    alice.say("kept-ops", "before")
    before = bob.wait_chat(lambda m: m["message"] == "before")
    # the token, like the history settings, comes from the nodes' file
    config = str(cluster.config_path)
    url = ["--redis-url", cluster.redis_server.url]
    if given == "--config":
        done = roomcast("say", "kept-ops", "kept notice", *url, "--config", config)
    else:
        done = roomcast("say", "kept-ops", "kept notice", *url, ROOMCAST_CONFIG=config)
    assert done.returncode == 0, done.stderr
    for client in (alice, bob):
        said = client.wait_chat(lambda m: m["message"] == "kept notice")
        assert said["from"] == 0
        assert (said["offset"], said["epoch"]) == (before["offset"] + 1, before["epoch"])
    history = alice.request("roomHistory kept-ops")["data"]
    assert [m["message"] for m in history["messages"]] == ["before", "kept notice"]


def test_an_unreadable_config_exits_2_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[chat]\nhistory_size = -1\n")
    done = roomcast("say", "x", "hi", "--redis-url", "redis://127.0.0.1:1/0", "--config", str(bad))
    assert done.returncode == 2
    assert "history_size" in done.stderr and "Traceback" not in done.stderr


def test_every_command_exits_1_with_the_reason_when_redis_is_unreachable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for command in (["rooms"], ["room", "x"], ["nodes"], ["say", "x", "hi"]):
        done = roomcast(*command, "--redis-url", url)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "Redis unreachable at redis://127.0.0.1:" in done.stderr
        assert "Traceback" not in done.stderr
