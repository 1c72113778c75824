"""Limits across the cluster: a remote ``add_member`` is held to the owning node's limits,
and the room limit counts the rooms of every node."""

from __future__ import annotations

from pathlib import Path

from cluster_support import CONFIG, Cluster


def strict_config(tmp_path: Path) -> str:
    path = tmp_path / "strict.toml"
    path.write_text(CONFIG + "\n[limits]\nroom_name_max_length = 8\nmax_rooms_per_connection = 1\n")
    return str(path)


def test_a_remote_add_member_is_refused_by_the_owning_nodes_room_name_limit(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start("a")
    cluster.start("b", "--config", strict_config(tmp_path))
    alice, bob = cluster.client("a"), cluster.client("b")
    alice.join("long-room-name")  # 14 bytes: a name node a accepts
    reply = alice.action("addMember", connectionId=bob.id, room="long-room-name")
    assert reply["error"] == "invalid room name"
    assert bob.rooms() == []


def test_a_remote_add_member_is_refused_past_the_owning_nodes_rooms_per_connection(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start("a")
    cluster.start("b", "--config", strict_config(tmp_path))
    alice, bob = cluster.client("a"), cluster.client("b")
    bob.join("first")
    alice.join("second")
    reply = alice.action("addMember", connectionId=bob.id, room="second")
    assert reply["error"] == "too many rooms (1 max)"
    assert bob.rooms() == ["first"]


def test_the_room_limit_counts_rooms_created_on_every_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "few.toml"
    path.write_text(CONFIG + "\n[limits]\nmax_rooms = 3\n")  # defaultRoom is one
    cluster.start("a", "--config", str(path))
    cluster.start("b", "--config", str(path))
    alice, bob = cluster.client("a"), cluster.client("b")
    assert alice.action("createChatRoom", name="made-on-a")["didCreate"] is True
    assert bob.action("createChatRoom", name="made-on-b")["didCreate"] is True
    assert alice.action("createChatRoom", name="one-more")["error"] == (
        "room limit reached (3 rooms)"
    )
    assert bob.action("status")["rooms"] == 3
