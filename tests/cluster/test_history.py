"""Room history, offsets, epochs and recovery on join, on nodes sharing a real Redis (and on
the embedded store)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_support import CONFIG, PREFIX, ChatClient, Cluster, wait_until

from support import LineClient, NodeProcess, start_node

KEPT = "kept-room"


def configure(cluster: Cluster, **chat: Any) -> None:
    """Give the nodes started after this a ``[chat]`` table with ``chat``."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in chat.items()]
    cluster.config_path.write_text(CONFIG + "\n[chat]\n" + "\n".join(lines) + "\n")


def positions(messages: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(m["offset"], m["epoch"], m["message"]) for m in messages]


def said(client: ChatClient, room: str, text: str) -> dict[str, Any]:
    """Say ``text`` and return the message as ``client`` received it back."""
    client.say(room, text)
    return client.wait_chat(lambda m: m["message"] == text and m["room"] == room)


def reply_comes_first(client: ChatClient, reply: dict[str, Any], room: str) -> bool:
    """True when no chat message of ``room`` arrived before ``reply``."""
    for message in client.received:
        if message is reply or message == reply:
            return True
        if isinstance(message, dict) and message.get("room") == room:
            return False
    return False


@pytest.fixture
def two_nodes(cluster: Cluster) -> Cluster:
    configure(cluster, history_size=100)
    cluster.start("a")
    cluster.start("b")
    return cluster


# positions -----------------------------------------------------------------------------


def test_offsets_and_epochs_are_the_same_on_every_node(two_nodes: Cluster) -> None:
    on_a, on_b = two_nodes.client("a"), two_nodes.client("b")
    on_a.join(KEPT)
    on_b.join(KEPT)
    for i in range(5):
        (on_a if i % 2 else on_b).say(KEPT, f"m{i}")
    for client in (on_a, on_b):
        client.wait_chat(lambda m: m["message"] == "m4")
        client.wait_chat(lambda m: m["message"] == "m3")
    seen_a, seen_b = positions(on_a.chat(KEPT)), positions(on_b.chat(KEPT))
    assert seen_a == seen_b
    assert [offset for offset, _, _ in seen_a] == [1, 2, 3, 4, 5]
    assert len({epoch for _, epoch, _ in seen_a}) == 1


def test_every_node_delivers_a_rooms_messages_in_offset_order(two_nodes: Cluster) -> None:
    on_a, on_b = two_nodes.client("a"), two_nodes.client("b")
    listener = two_nodes.client("a")
    for client in (on_a, on_b, listener):
        client.join(KEPT)
    for i in range(30):  # two senders on two nodes, interleaved without waiting
        on_a.sock.sendall(f"say {KEPT} a{i}\n".encode())
        on_b.sock.sendall(f"say {KEPT} b{i}\n".encode())
    listener.wait_chat(lambda m: m["message"] == "a29")
    listener.wait_chat(lambda m: m["message"] == "b29")
    offsets = [m["offset"] for m in listener.chat(KEPT)]
    assert offsets == list(range(1, 61))


def test_a_room_with_history_sends_offset_and_epoch_as_the_last_keys(two_nodes: Cluster) -> None:
    line = LineClient(two_nodes.nodes["b"].socket_port)
    try:
        line.read()  # welcome
        line.request(json.dumps({"action": "createChatRoom", "params": {"name": KEPT}}))
        assert line.request(f"roomAdd {KEPT}")["status"] == "OK"
        sender = two_nodes.client("a")
        sender.join(KEPT)
        sender.say(KEPT, "hi")
        raw = line.read_raw_line()
        while not raw.startswith(b'{"message"'):
            raw = line.read_raw_line()
        message = json.loads(raw)
        assert (
            raw
            == (
                f'{{"message":"hi","room":"{KEPT}","from":"{sender.id}","context":"user",'
                f'"sentAt":{message["sentAt"]},"offset":1,"epoch":"{message["epoch"]}"}}'
            ).encode()
        )
    finally:
        line.close()


def test_rooms_without_history_send_exactly_the_five_keys(cluster: Cluster) -> None:
    configure(cluster, history_size=100, history_rooms=["kept-*"])
    cluster.start("a")
    cluster.start("b")
    lines = [LineClient(cluster.nodes[n].socket_port) for n in ("a", "b")]
    try:
        for line in lines:
            line.read()  # welcome
            line.request(json.dumps({"action": "createChatRoom", "params": {"name": "plain"}}))
            assert line.request("roomAdd plain")["status"] == "OK"
        sender_id = lines[0].request("detailsView")["data"]["id"]
        lines[0].send_line("say plain hello")
        for line in lines:
            raw = line.read_raw_line()
            while not raw.startswith(b'{"message"'):
                raw = line.read_raw_line()
            sent_at = json.loads(raw)["sentAt"]
            assert (
                raw
                == (
                    f'{{"message":"hello","room":"plain","from":"{sender_id}",'
                    f'"context":"user","sentAt":{sent_at}}}'
                ).encode()
            )
    finally:
        for line in lines:
            line.close()


# roomHistory ---------------------------------------------------------------------------


def test_room_history_returns_the_kept_messages_after_since_oldest_first(
    two_nodes: Cluster,
) -> None:
    sender, reader = two_nodes.client("a"), two_nodes.client("b")
    sender.join(KEPT)
    reader.join(KEPT)
    for i in range(6):
        sender.say(KEPT, f"m{i}")
    reader.wait_chat(lambda m: m["message"] == "m5")
    reply = reader.request(f"roomHistory {KEPT} 2")
    data = reply["data"]
    assert reply["status"] == "OK"
    assert (data["room"], data["offset"]) == (KEPT, 6)
    assert data["messages"] == reader.chat(KEPT)[2:]


def test_room_history_stops_at_limit(two_nodes: Cluster) -> None:
    client = two_nodes.client("a")
    client.join(KEPT)
    for i in range(6):
        client.say(KEPT, f"m{i}")
    data = client.request(f"roomHistory {KEPT} 1 2")["data"]
    assert [(m["offset"], m["message"]) for m in data["messages"]] == [(2, "m1"), (3, "m2")]


def test_room_history_of_a_quiet_room_has_offset_zero_and_an_epoch(two_nodes: Cluster) -> None:
    client = two_nodes.client("a")
    client.join(KEPT)
    data = client.request(f"roomHistory {KEPT}")["data"]
    assert (data["offset"], data["messages"]) == (0, [])
    assert data["epoch"] and " " not in data["epoch"]


def test_room_history_is_for_members_only(two_nodes: Cluster) -> None:
    member, stranger = two_nodes.client("a"), two_nodes.client("a")
    member.join(KEPT)
    member.say(KEPT, "secret")
    reply = stranger.request(f"roomHistory {KEPT}")
    assert (reply["status"], reply["data"]) == (f"not member of room {KEPT}", False)


def test_room_history_of_a_room_without_history_is_refused(cluster: Cluster) -> None:
    configure(cluster, history_size=100, history_rooms=["kept-*"])
    cluster.start("a")
    client = cluster.client("a")
    client.join("plain")
    reply = client.request("roomHistory plain")
    assert (reply["status"], reply["data"]) == ("room has no history (plain)", False)


def test_room_history_with_a_bad_since_is_refused(two_nodes: Cluster) -> None:
    client = two_nodes.client("a")
    client.join(KEPT)
    reply = client.request(f"roomHistory {KEPT} -1")
    assert (reply["status"], reply["data"]) == ("since must be a whole number (0 or more)", False)


# recovery ------------------------------------------------------------------------------


def _missed(cluster: Cluster, node: str, count: int) -> tuple[ChatClient, int, str]:
    """A member on ``node`` that saw one message, then ``count`` it missed (it left)."""
    sender = cluster.client("a")
    sender.join(KEPT)
    first = said(sender, KEPT, "seen")
    gone = cluster.client(node)
    gone.join(KEPT)
    gone.leave(KEPT)
    for i in range(count):
        sender.say(KEPT, f"missed{i}")
    sender.wait_chat(lambda m: m["message"] == f"missed{count - 1}")
    return sender, first["offset"], first["epoch"]


@pytest.mark.parametrize("node", ["a", "b"], ids=["same-node", "other-node"])
def test_recovery_replays_the_missed_messages_after_the_reply(
    two_nodes: Cluster, node: str
) -> None:
    sender, since, epoch = _missed(two_nodes, node, 4)
    back = two_nodes.client(node)
    reply = back.request(f"roomAdd {KEPT} {since} {epoch}")
    assert reply["data"] == {"recovered": True, "epoch": epoch, "offset": since + 4}
    back.wait_chat(lambda m: m["message"] == "missed3")
    sender.say(KEPT, "after")
    back.wait_chat(lambda m: m["message"] == "after")
    assert [m["message"] for m in back.chat(KEPT)] == [f"missed{i}" for i in range(4)] + ["after"]
    assert reply_comes_first(back, reply, KEPT)


def test_recovery_from_the_latest_offset_replays_nothing(two_nodes: Cluster) -> None:
    _, since, epoch = _missed(two_nodes, "b", 2)
    back = two_nodes.client("b")
    reply = back.request(f"roomAdd {KEPT} {since + 2} {epoch}")
    assert reply["data"] == {"recovered": True, "epoch": epoch, "offset": since + 2}
    back.drain(0.3)
    assert back.chat(KEPT) == []


def test_recovery_with_a_wrong_epoch_replays_nothing_and_still_joins(two_nodes: Cluster) -> None:
    sender, since, epoch = _missed(two_nodes, "b", 3)
    back = two_nodes.client("b")
    reply = back.request(f"roomAdd {KEPT} {since} other{epoch}")
    assert reply["data"] == {"recovered": False, "epoch": epoch, "offset": since + 3}
    sender.say(KEPT, "after")
    back.wait_chat(lambda m: m["message"] == "after")
    assert [m["message"] for m in back.chat(KEPT)] == ["after"]
    assert KEPT in back.rooms()


def test_recovery_past_the_trimmed_history_replays_nothing(cluster: Cluster) -> None:
    configure(cluster, history_size=3)
    cluster.start("a")
    _, since, epoch = _missed(cluster, "a", 5)
    back = cluster.client("a")
    reply = back.request(f"roomAdd {KEPT} {since} {epoch}")
    assert reply["data"] == {"recovered": False, "epoch": epoch, "offset": since + 5}
    back.drain(0.3)
    assert back.chat(KEPT) == []
    assert KEPT in back.rooms()


def test_recovery_needs_both_since_and_epoch(two_nodes: Cluster) -> None:
    client = two_nodes.client("a")
    client.action("createChatRoom", name=KEPT)
    reply = client.request(f"roomAdd {KEPT} 3")
    assert (reply["status"], reply["data"]) == (
        "recovering a room needs both since and epoch",
        False,
    )
    assert KEPT not in client.rooms()


def _write_until(client: ChatClient, stop: threading.Event, sent: list[int]) -> None:
    """Say numbered messages until ``stop``, paced under the default ``say_rate`` (100 a
    second): a node quick enough to answer a burst would otherwise refuse one."""
    deadline = time.monotonic() + 30
    for i in range(100_000):
        if stop.is_set() or time.monotonic() > deadline:
            return
        client.say(KEPT, f"w{i}")
        sent.append(i)
        time.sleep(0.012)


@pytest.mark.parametrize("node", ["a", "b"], ids=["same-node", "other-node"])
def test_recovery_under_a_concurrent_writer_has_no_gap_and_no_duplicate(
    cluster: Cluster, node: str
) -> None:
    configure(cluster, history_size=1000)
    cluster.start("a")
    cluster.start("b")
    writer, watcher = cluster.client("a"), cluster.client(node)
    writer.join(KEPT)
    watcher.join(KEPT)
    stop, sent = threading.Event(), list[int]()
    thread = threading.Thread(target=_write_until, args=(writer, stop, sent), daemon=True)
    thread.start()
    try:
        last = watcher.wait_chat(lambda m: m["offset"] >= 10)
        watcher.close()  # drops off while the writer goes on
        wait_until(lambda: len(sent) >= last["offset"] + 30, 15, message="missed messages")
        back = cluster.client(node)
        since = last["offset"]
        reply = back.request(f"roomAdd {KEPT} {since} {last['epoch']}")
        wait_until(lambda: len(sent) >= reply["data"]["offset"] + 30, 15, message="newer ones")
    finally:
        stop.set()
        thread.join(10)
    assert reply["data"]["recovered"] is True
    fence = said(writer, KEPT, "fence")
    back.wait_chat(lambda m: m["message"] == "fence")
    offsets = [m["offset"] for m in back.chat(KEPT)]
    assert offsets == list(range(since + 1, fence["offset"] + 1))
    assert reply_comes_first(back, reply, KEPT)


# epochs --------------------------------------------------------------------------------


def test_a_redis_restarted_empty_changes_the_epoch(cluster: Cluster) -> None:
    configure(cluster, history_size=100)
    cluster.start("a")
    client = cluster.client("a")
    client.join(KEPT)
    before = said(client, KEPT, "before")
    cluster.kill_redis()
    cluster.restart_redis()

    def new_epoch() -> str | None:
        reply = client.request(f"roomHistory {KEPT}")
        epoch = reply["data"]["epoch"] if reply["status"] == "OK" else None
        return epoch if epoch and epoch != before["epoch"] else None

    epoch = wait_until(new_epoch, 20, interval=0.2, message="history after the restart")
    back = cluster.client("a")
    reply = back.request(f"roomAdd {KEPT} {before['offset']} {before['epoch']}")
    assert reply["data"]["recovered"] is False
    assert reply["data"]["epoch"] == epoch


def test_history_ttl_expiry_changes_the_epoch(cluster: Cluster) -> None:
    configure(cluster, history_size=100, history_ttl=0.5)
    cluster.start("a")
    client = cluster.client("a")
    client.join(KEPT)
    before = said(client, KEPT, "before")
    with cluster.redis() as redis:
        wait_until(
            lambda: not redis.exists(f"{PREFIX}history:{KEPT}"),
            10,
            message="history keys expired",
        )
    after = said(client, KEPT, "after")
    assert after["offset"] == 1
    assert after["epoch"] != before["epoch"]


def test_the_history_key_lives_for_the_history_ttl(cluster: Cluster) -> None:
    configure(cluster, history_size=100, history_ttl=60.0)
    cluster.start("a")
    client = cluster.client("a")
    client.join(KEPT)
    said(client, KEPT, "hello")
    with cluster.redis() as redis:
        assert 50_000 < redis.pttl(f"{PREFIX}history:{KEPT}") <= 60_000


def test_destroying_a_room_forgets_its_history(two_nodes: Cluster) -> None:
    client = two_nodes.client("a")
    client.join(KEPT)
    said(client, KEPT, "hello")
    assert client.action("destroyRoom", room=KEPT).get("destroyed") is True
    with two_nodes.redis() as redis:
        assert redis.exists(f"{PREFIX}history:{KEPT}") == 0


# the embedded store --------------------------------------------------------------------


@pytest.fixture
def embedded_node(tmp_path: Path) -> Iterator[NodeProcess]:
    config = tmp_path / "embedded.toml"
    config.write_text('[chat]\nhistory_size = 10\nstarting_chat_rooms = ["defaultRoom"]\n')
    node = start_node("--config", str(config), log_dir=tmp_path)
    yield node
    node.stop()


def test_the_embedded_store_gives_offsets_and_epochs(embedded_node: NodeProcess) -> None:
    client = ChatClient(embedded_node.socket_port)
    try:
        client.join("defaultRoom", create=False)
        first, second = said(client, "defaultRoom", "one"), said(client, "defaultRoom", "two")
        assert (first["offset"], second["offset"]) == (1, 2)
        assert first["epoch"] == second["epoch"]
    finally:
        client.close()


def test_the_embedded_store_keeps_history_and_recovers(embedded_node: NodeProcess) -> None:
    sender, back = ChatClient(embedded_node.socket_port), ChatClient(embedded_node.socket_port)
    try:
        sender.join("defaultRoom", create=False)
        first = said(sender, "defaultRoom", "one")
        said(sender, "defaultRoom", "two")
        data = sender.request("roomHistory defaultRoom 1")["data"]
        assert [m["message"] for m in data["messages"]] == ["two"]
        reply = back.request(f"roomAdd defaultRoom {first['offset']} {first['epoch']}")
        assert reply["data"]["recovered"] is True
        assert back.wait_chat(lambda m: m["message"] == "two")["offset"] == 2
    finally:
        sender.close()
        back.close()
