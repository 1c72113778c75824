"""``roomcast start --workers N``: worker processes sharing the ports through Redis."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import CONFIG, PRESENCE_TTL, ChatClient

from support import NodeProcess, RedisProcess, start_node, wait_until

WORKERS = 2


@pytest.fixture
def workers(redis_server: RedisProcess, tmp_path: Path) -> Iterator[NodeProcess]:
    config = tmp_path / "roomcast.toml"
    config.write_text(CONFIG)
    supervisor = start_node(
        "--config",
        str(config),
        "--redis-url",
        redis_server.url,
        "--workers",
        str(WORKERS),
        node_id="pool",
        log_dir=tmp_path,
    )
    try:
        wait_until(
            lambda: "roomcast ready pool workers=2" in supervisor.log,
            20,
            message="every worker ready",
        )
        yield supervisor
    finally:
        supervisor.stop()


def worker_pids(supervisor: NodeProcess) -> dict[str, int]:
    """The latest pid of each worker, from the supervisor's log."""
    found = re.findall(r"worker (pool-\d+) started \(pid (\d+)\)", supervisor.log)
    return {worker: int(pid) for worker, pid in found}


def node_of(client: ChatClient) -> str:
    node: str = client.action("status")["id"]
    return node


def clients_on_every_worker(port: int, limit: int = 64) -> dict[str, ChatClient]:
    """Connect until a client sits on each worker (the kernel spreads connections)."""
    by_worker: dict[str, ChatClient] = {}
    extra: list[ChatClient] = []
    for _ in range(limit):
        client = ChatClient(port)
        worker = node_of(client)
        if worker in by_worker:
            extra.append(client)
        else:
            by_worker[worker] = client
        if len(by_worker) == WORKERS:
            break
    for client in extra:
        client.close()
    return by_worker


def test_more_than_one_worker_without_redis_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "roomcast", "start", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")},
    )
    assert done.returncode == 2
    assert "--workers > 1 needs --redis-url (workers share rooms through Redis)" in done.stderr


def test_connections_are_spread_over_workers_that_chat_together(
    workers: NodeProcess,
) -> None:
    clients = clients_on_every_worker(workers.socket_port)
    try:
        assert sorted(clients) == ["pool-1", "pool-2"]
        for client in clients.values():
            client.join("shared")
        clients["pool-1"].say("shared", "from-one")
        for client in clients.values():
            said = client.wait_chat(lambda m: m["room"] == "shared" and m["message"] == "from-one")
            assert said["from"] == clients["pool-1"].id
    finally:
        for client in clients.values():
            client.close()


def test_a_killed_worker_is_started_again_and_its_members_are_reaped(
    workers: NodeProcess, redis_server: RedisProcess
) -> None:
    clients = clients_on_every_worker(workers.socket_port)
    try:
        doomed = clients["pool-2"]
        doomed.join("lobby")
        old_pid = worker_pids(workers)["pool-2"]
        os.kill(old_pid, signal.SIGKILL)
        wait_until(
            lambda: (
                worker_pids(workers)["pool-2"] != old_pid
                and workers.log.count("roomcast ready pool-2 ") == 2
            ),
            20,
            message="pool-2 started again and ready",
        )
        import redis

        with redis.Redis(port=redis_server.port, decode_responses=True) as store:
            wait_until(
                lambda: doomed.id not in store.hkeys("roomcast:members:lobby"),
                PRESENCE_TTL * 3 + 10,
                message="the killed worker's member reaped",
            )
        again = clients_on_every_worker(workers.socket_port)
        try:
            assert "pool-2" in again  # the restarted worker takes clients
        finally:
            for client in again.values():
                client.close()
    finally:
        for client in clients.values():
            client.close()


def test_sigterm_stops_every_worker_and_exits_0(workers: NodeProcess) -> None:
    pids = worker_pids(workers)
    assert len(pids) == WORKERS
    assert workers.stop(signal.SIGTERM, timeout=30) == 0
    for pid in pids.values():
        wait_until(functools.partial(_gone, pid), 10, message=f"worker {pid} gone")
    assert "roomcast pool stopped (2 workers)" in workers.log


def _gone(pid: int) -> bool:
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
