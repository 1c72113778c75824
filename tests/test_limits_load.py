"""Bounded work per read, under load, against a real ``roomcast start`` process: clients
holding huge partial lines, and a client pipelining says into a crowded room, must not
slow an honest client down nor hold the node's event loop."""

from __future__ import annotations

import json
import math
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import LOOPBACK, LineClient, NodeProcess, start_node

HERE = Path(__file__).parent
PROBES = HERE / "load_actions"
FLOOD = HERE / "flood_room.py"
PACE = 0.015  # seconds between the honest client's says: ~65/s, under say_rate


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def honest_client(node: NodeProcess) -> LineClient:
    client = LineClient(node.socket_port)
    client.read()  # welcome
    assert client.request('{"action":"createChatRoom","params":{"name":"honest"}}')
    assert client.request("roomAdd honest")["status"] == "OK"
    return client


def say_round_trip(client: LineClient) -> float:
    """Seconds from sending a say to reading its reply."""
    start = time.perf_counter()
    reply = client.request("say honest ping")
    elapsed = time.perf_counter() - start
    assert reply["status"] == "OK", reply
    return elapsed


def round_trips(client: LineClient, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        samples.append(say_round_trip(client))
        time.sleep(PACE)
    return samples


def loop_held_ms(probe: LineClient, reset: bool = False) -> dict[str, float]:
    """The node's worst event-loop hold since the last reset: ``heldMs`` of CPU time spent
    elsewhere while its watcher waited (what a busy machine does not inflate), and
    ``wallMs`` of lateness."""
    line = '{"action":"loopLag","params":{"reset":"yes"}}' if reset else "loopLag"
    reply = probe.request(line)
    return {"heldMs": reply["heldMs"], "wallMs": reply["wallMs"]}


def node_with(tmp_path: Path, limits: str = "") -> NodeProcess:
    config = tmp_path / "roomcast.toml"
    config.write_text(f"[limits]\n{limits}\n")
    return start_node("--config", str(config), "--actions", str(PROBES), web_port=0)


@pytest.fixture
def probe_node(tmp_path: Path) -> Iterator[NodeProcess]:
    node = node_with(tmp_path)
    yield node
    node.stop()


# partial lines --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_fifty_clients_trickling_megabyte_partial_lines_do_not_slow_an_honest_client(
    probe_node,
):
    started = time.monotonic()
    honest, probe = honest_client(probe_node), LineClient(probe_node.socket_port)
    probe.read()
    before = round_trips(honest, 100)
    trickling = [socket.create_connection((LOOPBACK, probe_node.socket_port)) for _ in range(50)]
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.1):
            for sock in trickling:
                sock.send(b"y")

    try:
        for sock in trickling:
            sock.sendall(b"x" * 1_000_000)  # under max_data_length (1 MiB), never ended
        settle = time.monotonic() + 1.0  # the node reads the 50 MB the kernel took meanwhile
        while time.monotonic() < settle:
            say_round_trip(honest)
            time.sleep(PACE)
        loop_held_ms(probe, reset=True)
        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        during = round_trips(honest, 250)
        lag = loop_held_ms(probe)
    finally:
        stop.set()
        for sock in trickling:
            sock.close()
    limit = max(0.050, 3 * p99(before))
    assert p99(during) <= limit, (p99(before), p99(during))
    assert lag["heldMs"] <= 50, lag
    assert time.monotonic() - started < 20


# a pipelined say flood ------------------------------------------------------------------


def flood_while_measuring(
    node: NodeProcess, seconds: float, max_says: int
) -> tuple[list[float], list[float], float, dict[str, int]]:
    """Round trips before and during a flood of says into a 500-member room, the loop's
    worst lag during it, and the flooder's counts."""
    honest, probe = honest_client(node), LineClient(node.socket_port)
    probe.read()
    flood = subprocess.Popen(
        [
            sys.executable,
            str(FLOOD),
            str(node.socket_port),
            "defaultRoom",
            "500",
            str(seconds),
            str(max_says),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([flood.stdout], [], [], 30)
        assert ready and flood.stdout.readline().strip() == "ready"
        before = round_trips(honest, 100)
        loop_held_ms(probe, reset=True)
        flood.stdin.write("go\n")
        flood.stdin.flush()
        during: list[float] = []
        deadline = time.monotonic() + seconds + 15
        while not select.select([flood.stdout], [], [], 0)[0]:
            assert time.monotonic() < deadline, "the flood did not end"
            during.append(say_round_trip(honest))
            time.sleep(PACE)
        lag = loop_held_ms(probe)
        counts = json.loads(flood.stdout.readline())
    finally:
        flood.stdin.close()
        flood.wait(10)
    return before, during, lag, counts


@pytest.mark.timeout(90)
def test_a_say_flood_into_a_crowded_room_without_a_say_rate_does_not_hold_the_loop(tmp_path):
    node = node_with(tmp_path, "say_rate = 0")
    try:
        before, during, lag, counts = flood_while_measuring(node, 6.0, 3000)
    finally:
        node.stop()
    assert counts["ok"] >= 2000 and counts["closed"] == 0, counts  # 1,000,000+ deliveries
    assert len(during) >= 20, (len(during), counts)
    assert p99(during) <= max(0.050, 3 * p99(before)), (p99(before), p99(during), counts)
    assert lag["heldMs"] <= 50, (lag, counts)


@pytest.mark.timeout(90)
def test_a_say_flood_into_a_crowded_room_is_capped_by_the_say_rate(tmp_path):
    node = node_with(tmp_path)  # say_rate 100/s, bursts of 200
    try:
        before, during, lag, counts = flood_while_measuring(node, 3.0, 1_000_000)
    finally:
        node.stop()
    assert counts["too_fast"] > 1000, counts
    assert counts["ok"] <= 200 + 100 * (counts["seconds"] + 0.5), counts
    assert p99(during) <= max(0.050, 3 * p99(before)), (p99(before), p99(during), counts)
    assert lag["heldMs"] <= 50, (lag, counts)
