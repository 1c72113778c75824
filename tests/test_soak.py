"""A soak of 300 clients against one real ``roomcast start`` process, bounded in time:
honest members over TCP and WebSocket join, chat, leave and reconnect at random while
others flood past the say rate, stop reading, and send garbage lines and frames.

The soak runs once (a module fixture, seeded, about 25 s of traffic); each test checks
one outcome: no honest message lost, duplicated or out of order; the misbehaving clients
answered as the limits say; the node's counts and memory back where they started.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from soak_support import (
    HonestMember,
    Ledger,
    Misbehaviour,
    feeder,
    flooder,
    garbage_sender,
    open_session,
    staller,
)
from websupport import create_room, http_request

from limits_support import (
    MIB,
    metric,
    new_client_is_served,
    node_rss,
    raise_own_file_limit,
    write_settings,
)
from support import NodeProcess, start_node

SEED = 20240611
SECONDS = 22.0  # of traffic
HONEST_TCP = HONEST_WEBSOCKET = 100
KEPT = 10  # honest members whose last session stays open when the traffic stops
FLOODERS = 4
STALLERS_TCP, STALLERS_WEBSOCKET = 24, 12
GARBAGE = 60
ROOMS = [f"soak-{n}" for n in range(16)]
SPAM_ROOMS = ["spam-0", "spam-1"]  # where the flooders are
BIG_ROOMS = ["big-0", "big-1"]  # where the feeders and the stalled members are
SEND_BUFFER_LIMIT = 256 * 1024
RSS_GROWTH = 30 * MIB
PROBES = Path(__file__).parent / "load_actions"


@dataclass
class Soaked:
    ledger: Ledger
    seen: Misbehaviour
    failures: list[str]
    sessions: int
    seconds: float
    kept: int = 0
    #: While the kept sessions were open: /api/status, the rooms' counts, and what the
    #: kept sessions say they are in.
    status_kept: dict[str, Any] = field(default_factory=dict)
    rooms_kept: dict[str, dict[str, int]] = field(default_factory=dict)
    expected_rooms: dict[str, int] = field(default_factory=dict)
    #: Once every client had gone.
    status_after: dict[str, Any] = field(default_factory=dict)
    rooms_after: dict[str, dict[str, int]] = field(default_factory=dict)
    rss_start: int = 0
    rss_after: int = 0
    dropped: float = 0.0
    left_open: list[dict[str, Any]] = field(default_factory=list)
    dropped_honest: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    served_after: bool = False


def api_status(node: NodeProcess) -> dict[str, Any]:
    reply = http_request(node.web_port, "GET", "/api/status")
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.json()
    return body


def room_counts(node: NodeProcess) -> dict[str, dict[str, int]]:
    reply = http_request(node.web_port, "GET", "/api/roomCounts", timeout=15)
    assert reply.status == 200, reply.body
    counts: dict[str, dict[str, int]] = reply.json()["rooms"]
    return counts


async def warm_up(node: NodeProcess, ledger: Ledger) -> None:
    """One TCP and one WebSocket session chat once: the node has served both kinds
    before its memory is taken as the start."""
    for index, websocket in enumerate((False, True)):
        session = await open_session(
            f"warm{index}", websocket, node.socket_port, node.web_port, ledger
        )
        await session.join(ROOMS[0])
        await session.close()


async def soak(node: NodeProcess, result: Soaked) -> None:
    ledger, seen = result.ledger, result.seen
    await warm_up(node, ledger)
    await asyncio.sleep(0.5)
    result.rss_start = node_rss(node)
    rng = random.Random(SEED)
    loop = asyncio.get_running_loop()
    until = loop.time() + SECONDS
    honest = [
        HonestMember(
            f"t{n}" if n < HONEST_TCP else f"w{n}",
            n >= HONEST_TCP,
            ROOMS + SPAM_ROOMS,  # never a big room: its feed is for the stalled ones
            random.Random(rng.random()),
        )
        for n in range(HONEST_TCP + HONEST_WEBSOCKET)
    ]
    ports = (node.socket_port, node.web_port)
    tasks = [
        member.run(node.socket_port, node.web_port, ledger, until, keep=n % 20 == 0)
        for n, member in enumerate(honest)
    ]
    tasks += [flooder(node.socket_port, SPAM_ROOMS[n % 2], until, seen) for n in range(FLOODERS)]
    tasks += [feeder(node.socket_port, room, until) for room in BIG_ROOMS]
    tasks += [
        staller(
            (node.web_port, True) if n < STALLERS_WEBSOCKET else (node.socket_port, False),
            BIG_ROOMS[n % 2],
            random.Random(rng.random()),
            until,
            seen,
        )
        for n in range(STALLERS_TCP + STALLERS_WEBSOCKET)
    ]
    tasks += [
        garbage_sender(ports, random.Random(rng.random()), until, seen) for _ in range(GARBAGE)
    ]
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            result.failures.append(repr(outcome))
    result.sessions = sum(member.sessions for member in honest)
    kept = [member.kept for member in honest if member.kept is not None]
    result.kept = len(kept)
    for session in kept:
        for room in session.joined:
            result.expected_rooms[room] = result.expected_rooms.get(room, 0) + 1
    # Clients that just went (a dropped staller, a garbage sender) may still be closing on
    # the node's side: the count settles within moments, a leak never does.
    settle_by = time.monotonic() + 10
    while True:
        result.status_kept = await asyncio.to_thread(api_status, node)
        if result.status_kept["connections"] <= len(kept) + 1 or time.monotonic() > settle_by:
            break
        await asyncio.sleep(0.2)
    result.rooms_kept = await asyncio.to_thread(room_counts, node)
    for session in kept:
        await session.close()


def poll(predicate: Any, seconds: float) -> None:
    """Wait until ``predicate()`` holds or ``seconds`` pass (the tests judge the outcome)."""
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture(scope="module")
def soaked() -> Iterator[Soaked]:
    raise_own_file_limit(4000)
    settings = write_settings(
        f"[socket]\nsend_buffer_limit = {SEND_BUFFER_LIMIT}\n"
        f"[web]\nsend_buffer_limit = {SEND_BUFFER_LIMIT}\n"
    )
    node = start_node("--config", settings, "--actions", str(PROBES))
    started = time.monotonic()
    cpu_started = time.process_time()
    result = Soaked(Ledger(), Misbehaviour(), [], 0, 0.0)
    try:
        for room in ROOMS + SPAM_ROOMS + BIG_ROOMS:
            create_room(node.web_port, room)
        asyncio.run(soak(node, result))
        poll(lambda: api_status(node)["connections"] == 1, 15)
        result.status_after = api_status(node)
        result.rooms_after = room_counts(node)
        result.left_open = http_request(node.web_port, "GET", "/api/openConnections").json()[
            "connections"
        ]
        poll(lambda: node_rss(node) <= result.rss_start + RSS_GROWTH, 10)
        result.rss_after = node_rss(node)
        result.dropped = metric(node, "roomcast_slow_consumers_dropped_total")
        result.served_after = new_client_is_served(node)
        result.seconds = time.monotonic() - started
        log = node.log
        result.dropped_honest = [
            name for id_, name in result.ledger.ids.items() if f"disconnecting {id_} " in log
        ]
        result.cpu = {
            "test": time.process_time() - cpu_started,
            "node": sum(psutil.Process(node.pid).cpu_times()[:2]),
            "wall": result.seconds,
        }
        print(
            f"soak: {result.cpu}, {len(result.ledger.said)} says, {result.sessions} sessions,"
            f" {result.ledger.owed_deliveries()} owed deliveries, RSS"
            f" {result.rss_start / MIB:.1f} -> {result.rss_after / MIB:.1f} MiB,"
            f" {result.seen.too_fast} too fast, {result.dropped:.0f} dropped"
        )
        yield result
    finally:
        node.stop()


def test_no_honest_message_is_lost_duplicated_or_out_of_order(soaked: Soaked) -> None:
    assert not soaked.failures, soaked.failures[:10]
    assert not soaked.ledger.errors, (soaked.ledger.errors[:10], soaked.dropped_honest[:10])
    problems = soaked.ledger.problems()
    assert not problems, (len(problems), problems[:20])
    # the soak was one: hundreds of sessions, thousands of says, many owed deliveries
    assert soaked.sessions >= 200, soaked.sessions
    assert len(soaked.ledger.said) >= 1000, len(soaked.ledger.said)
    assert soaked.ledger.owed_deliveries() >= 10_000


def test_flooders_are_answered_too_fast_and_stalled_members_are_dropped(soaked: Soaked) -> None:
    seen = soaked.seen
    # each flooder: its burst of 200, then 100 a second at most
    assert seen.flood_ok <= FLOODERS * (200 + 100 * (SECONDS + 2)), seen
    assert seen.too_fast >= FLOODERS * 500, seen
    assert seen.stalled >= STALLERS_TCP + STALLERS_WEBSOCKET
    assert soaked.dropped >= 10, soaked.dropped


def test_every_garbage_line_and_frame_gets_its_error_or_close(soaked: Soaked) -> None:
    seen = soaked.seen
    assert not seen.wrong, seen.wrong[:10]
    assert seen.garbage_answered == seen.garbage_sent >= 500, seen
    assert set(seen.closes) == {1002, 1007, 1009}, seen.closes


def test_status_counts_the_open_connections_and_rooms_their_members(soaked: Soaked) -> None:
    assert soaked.kept == KEPT
    # an HTTP request is a connection while it runs: the status call counts itself
    assert soaked.status_kept["connections"] == KEPT + 1, soaked.status_kept
    assert soaked.status_kept["localRooms"] == len(soaked.expected_rooms), soaked.status_kept
    members = {room: counts["stored"] for room, counts in soaked.rooms_kept.items()}
    indexed = {room: counts["indexed"] for room, counts in soaked.rooms_kept.items()}
    expected = {room: soaked.expected_rooms.get(room, 0) for room in members}
    assert members == expected
    assert indexed == expected


def test_once_every_client_is_gone_no_connection_or_membership_is_left(soaked: Soaked) -> None:
    # the HTTP request asking is the one connection left
    assert soaked.status_after["connections"] == 1, soaked.status_after
    left = [(details["type"], details["pendingActions"]) for details in soaked.left_open]
    assert left == [("web", 1)], soaked.left_open
    assert soaked.status_after["localRooms"] == 0, soaked.status_after
    assert {
        room: counts for room, counts in soaked.rooms_after.items() if any(counts.values())
    } == {}
    assert soaked.served_after


def test_once_every_client_is_gone_the_nodes_memory_is_back_near_its_start(
    soaked: Soaked,
) -> None:
    grown = soaked.rss_after - soaked.rss_start
    assert grown <= RSS_GROWTH, f"{grown / MIB:.1f} MiB more than at the start"
    assert soaked.seconds < 60, soaked.seconds
