"""A private Redis Cluster for the tests: 3 masters and 3 replicas on free loopback ports.

Every redis-server is started here with its own directory and stopped by its pid; every
wait is a poll with a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis

from support import LOOPBACK, free_port, wait_until

#: Milliseconds before a silent master is taken for failed and its replica takes over.
NODE_TIMEOUT_MS = 2000
#: A cluster node also listens on its port + 10000 (the cluster bus).
BUS_OFFSET = 10000


def free_cluster_port() -> int:
    """A free loopback port whose cluster-bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + BUS_OFFSET > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port + BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def cluster_binaries() -> tuple[str, str] | None:
    """redis-server and redis-cli, or None when either is missing."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    return (server, cli) if server and cli else None


@dataclass
class RedisClusterProcesses:
    """The redis-server processes of one Redis Cluster, by port."""

    directory: Path
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ports(self) -> list[int]:
        return sorted(self.processes)

    @property
    def seed_url(self) -> str:
        """A node roomcast is given as its seed (any live node would do)."""
        return f"redis://{LOOPBACK}:{self.live_ports()[0]}/0"

    def live_ports(self) -> list[int]:
        return [port for port, process in sorted(self.processes.items()) if process.poll() is None]

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (for PUBSUB, CLUSTER and INFO commands)."""
        return redis.Redis(host=LOOPBACK, port=port, decode_responses=True, socket_timeout=5)

    def client(self) -> redis.RedisCluster:
        """A cluster client, for reading what the nodes wrote."""
        return redis.RedisCluster(
            host=LOOPBACK, port=self.live_ports()[0], decode_responses=True, socket_timeout=5
        )

    def slot_owners(self) -> list[tuple[int, int, int]]:
        """``(first slot, last slot, master port)`` as a live node sees them."""
        with self.node(self.live_ports()[0]) as node:
            ranges = node.execute_command("CLUSTER SLOTS")
        # Each entry: first slot, last slot, [master host, port, id], replicas...
        return sorted((int(entry[0]), int(entry[1]), int(entry[2][1])) for entry in ranges)

    def replicas_of(self, master: int) -> list[int]:
        """Ports of the replicas of the master at ``master``."""
        with self.node(self.live_ports()[0]) as node:
            ranges = node.execute_command("CLUSTER SLOTS")
        return sorted(
            {
                int(replica[1])
                for entry in ranges
                if int(entry[2][1]) == master
                for replica in entry[3:]
            }
        )

    def masters(self) -> list[int]:
        return sorted({port for _, _, port in self.slot_owners()})

    def keyslot(self, name: str) -> int:
        with self.node(self.live_ports()[0]) as node:
            return int(node.execute_command("CLUSTER KEYSLOT", name))

    def master_of(self, name: str) -> int:
        """The port of the master serving ``name``'s hash slot."""
        slot = self.keyslot(name)
        for first, last, port in self.slot_owners():
            if first <= slot <= last:
                return port
        raise AssertionError(f"slot {slot} of {name!r} is not served")

    def pid(self, port: int) -> int:
        return self.processes[port].pid

    def kill(self, port: int) -> None:
        """SIGKILL one node: nothing of it is saved, its replica has to take over."""
        process = self.processes[port]
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed node again; it rejoins the cluster (as a replica, if replaced)."""
        self.processes[port] = _start_server(port, self.directory / str(port))
        wait_until(lambda: _ping(port), 10, message=f"redis-server on {port}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and every replica is in sync."""

        def healthy() -> bool:
            for port in self.live_ports():
                try:
                    with self.node(port) as node:
                        if node.cluster("INFO")["cluster_state"] != "ok":
                            return False
                        info = node.info("replication")
                except redis.RedisError:
                    return False
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
            # Every node also sees every live node serving a slot, as master or replica.
            for port in self.live_ports():
                with self.node(port) as node:
                    ranges = node.execute_command("CLUSTER SLOTS")
                serving = {int(server[1]) for entry in ranges for server in entry[2:]}
                if serving != set(self.live_ports()):
                    return False
            return True

        wait_until(healthy, timeout, interval=0.1, message="a healthy Redis Cluster")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _start_server(port: int, directory: Path) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    binaries = cluster_binaries()
    assert binaries is not None
    return subprocess.Popen(
        [
            binaries[0],
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(directory / "nodes.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _ping(port: int) -> bool:
    try:
        with redis.Redis(host=LOOPBACK, port=port, socket_timeout=0.5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def start_redis_cluster(masters: int = 3) -> RedisClusterProcesses:
    """Start ``masters`` masters with one replica each and join them into a cluster."""
    binaries = cluster_binaries()
    if binaries is None:
        raise RuntimeError("redis-server and redis-cli are needed for a Redis Cluster")
    cluster = RedisClusterProcesses(Path(tempfile.mkdtemp(prefix="roomcast-rcluster-")))
    try:
        for _ in range(2 * masters):
            port = free_cluster_port()
            cluster.processes[port] = _start_server(port, cluster.directory / str(port))
        for port in cluster.ports:
            wait_until(functools.partial(_ping, port), 10, message=f"redis-server on {port}")
        # The first ``masters`` addresses become masters, the others their replicas.
        subprocess.run(
            [
                binaries[1],
                "--cluster",
                "create",
                *(f"{LOOPBACK}:{port}" for port in cluster.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster
