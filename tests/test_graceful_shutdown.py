"""Graceful shutdown on SIGTERM/SIGINT: pending actions finish (within a bound), clients get
``Bye!``, connections leave their rooms, and the process exits 0."""

from __future__ import annotations

import os
import signal
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from roomcast import ChatMiddleware
from roomcast.testing import TestNode
from support import LOOPBACK, LineClient, NodeProcess, start_node, wait_until

SLOW_ACTION = """
import asyncio

import roomcast


class Slow(roomcast.Action):
    name = "slow"
    inputs = {"seconds": {"default": 1.0, "formatter": float}}

    async def run(self, data):
        await asyncio.sleep(data.params["seconds"])
        data.response["slept"] = data.params["seconds"]
"""

BYE = b'{"status":"Bye!","context":"api"}'


@pytest.fixture(scope="module")
def actions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("slow-actions")
    (directory / "slow.py").write_text(textwrap.dedent(SLOW_ACTION))
    return directory


def start_slow_node(actions_dir: Path, *extra: str) -> NodeProcess:
    return start_node("--actions", str(actions_dir), *extra, web_port=0)


def connected(node: NodeProcess) -> LineClient:
    client = LineClient(node.socket_port, timeout=10)
    client.read()  # welcome
    return client


def wait_pending(client: LineClient, count: int) -> None:
    wait_until(
        lambda: client.request("detailsView")["data"]["pendingActions"] == count,
        5,
        message=f"{count} pending action(s)",
    )


def wait_stopping(node: NodeProcess) -> None:
    wait_until(
        lambda: f"roomcast {node.node_id} stopping" in node.log,
        5,
        message="the node to begin stopping",
    )


def exit_code(node: NodeProcess, timeout: float = 15.0) -> int:
    return node.process.wait(timeout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_says_bye_to_socket_clients_and_exits_0(sig: signal.Signals) -> None:
    node = start_node(web_port=0)
    client = connected(node)
    try:
        client.request("roomAdd defaultRoom")
        os.kill(node.pid, sig)
        assert client.read_raw_line() == BYE
        assert client.is_closed()
        assert exit_code(node) == 0
        assert f"roomcast {node.node_id} stopped" in node.log
    finally:
        client.close()
        node.stop()


def test_pending_action_finishes_and_is_answered_before_bye(actions_dir: Path) -> None:
    node = start_slow_node(actions_dir)
    client = connected(node)
    try:
        client.send_line('{"action":"slow","params":{"seconds":1.0}}')
        wait_pending(client, 1)
        os.kill(node.pid, signal.SIGTERM)
        assert client.read() == {"slept": 1.0, "context": "response", "messageCount": 1}
        assert client.read_raw_line() == BYE
        assert exit_code(node) == 0
    finally:
        client.close()
        node.stop()


def test_actions_requested_during_shutdown_are_refused(actions_dir: Path) -> None:
    node = start_slow_node(actions_dir)
    client = connected(node)
    try:
        client.send_line('{"action":"slow","params":{"seconds":1.5}}')
        wait_pending(client, 1)
        count = client.request("detailsView")["messageCount"]
        os.kill(node.pid, signal.SIGTERM)
        wait_stopping(node)
        assert client.request("status") == {
            "error": "the server is shutting down",
            "context": "response",
            "messageCount": count + 1,
        }
        assert client.read()["slept"] == 1.5
        assert client.read_raw_line() == BYE
        assert exit_code(node) == 0
    finally:
        client.close()
        node.stop()


def test_new_connections_are_refused_once_shutdown_begins(actions_dir: Path) -> None:
    node = start_slow_node(actions_dir)
    client = connected(node)
    try:
        client.send_line('{"action":"slow","params":{"seconds":1.5}}')
        wait_pending(client, 1)
        os.kill(node.pid, signal.SIGTERM)
        wait_stopping(node)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, node.socket_port), timeout=2).close()
        assert node.process.poll() is None  # still finishing the slow action
        assert exit_code(node) == 0
    finally:
        client.close()
        node.stop()


def test_shutdown_waits_for_pending_actions_only_up_to_its_bound(
    actions_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "roomcast.toml"
    config.write_text("shutdown_timeout = 0.5\n")
    node = start_slow_node(actions_dir, "--config", str(config))
    client = connected(node)
    try:
        client.send_line('{"action":"slow","params":{"seconds":60}}')
        wait_pending(client, 1)
        started = time.monotonic()
        os.kill(node.pid, signal.SIGTERM)
        assert client.read_raw_line() == BYE  # no reply: the action was cut off
        assert client.is_closed()
        assert exit_code(node) == 0
        assert time.monotonic() - started < 5
    finally:
        client.close()
        node.stop()


async def test_stop_removes_every_connection_from_its_rooms() -> None:
    node = TestNode()
    api = node.api
    left: list[tuple[str, str]] = []
    snapshot: dict[str, dict[str, dict[str, Any]]] = {}
    real_cluster_stop = api.cluster.stop

    async def cluster_stop() -> None:  # look at the store just before it is closed
        for room in ("defaultRoom", "side"):
            snapshot[room] = await api.cluster.store.room_members(room)
        await real_cluster_stop()

    api.cluster.stop = cluster_stop  # type: ignore[method-assign]
    await api.start()
    api.chat_room.add_middleware(
        ChatMiddleware("spy", leave=lambda connection, room: left.append((connection.id, room)))
    )
    await api.chat_room.add("side")
    alice, bob = await node.connect(), await node.connect()
    for connection, room in ((alice, "defaultRoom"), (alice, "side"), (bob, "side")):
        await api.chat_room.add_member(connection.id, room)
    await api.stop()
    assert sorted(left) == sorted([(alice.id, "defaultRoom"), (alice.id, "side"), (bob.id, "side")])
    assert snapshot == {"defaultRoom": {}, "side": {}}
    assert (alice.rooms, bob.rooms) == ([], [])
    assert alice.closed and bob.closed
    assert len(api.connections) == 0
