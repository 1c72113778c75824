"""The servers under test: how to start each one as its own subprocess.

Every target runs in a fresh process for each scenario, listening on
127.0.0.1 on free ports, with its output in a log file under the run's
scratch directory. Its CPU time and RSS are read from the process itself
(and its children) through psutil.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
ACTIONHERO_DIR = BENCH_DIR / ".peers" / "actionhero"
HOST = "127.0.0.1"


class TargetUnavailable(Exception):
    """The target cannot run here (a peer not installed); the run skips it."""


class TargetFailed(Exception):
    """The target was expected to run but did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _schedstat_s(pid: int) -> float | None:
    """Sum of on-CPU time of a process's live threads, from /proc/<pid>/task/*/schedstat.

    psutil's user+system time ticks at 10 ms; this is nanoseconds. Every server here
    keeps its threads for its whole life, so no time is lost with exited threads.
    """
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return None
    total = 0
    for tid in tids:
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    if cpus is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", cpus, *cmd]


@dataclass
class ServerProc:
    """One running server process; stop() always reaps it."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    ports: dict[str, int]
    proc: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.proc = psutil.Process(self.popen.pid)

    def _procs(self) -> list[psutil.Process]:
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_s(self) -> float:
        """CPU seconds used so far by the process tree (nanosecond schedstat where Linux has it)."""
        total = 0.0
        for p in self._procs():
            precise = _schedstat_s(p.pid)
            if precise is not None:
                total += precise
                continue
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def user_system_s(self) -> tuple[float, float]:
        """(user, system) CPU seconds, at psutil's 10 ms tick: for the kernel's share only."""
        user = system = 0.0
        for p in self._procs():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                user += t.user
                system += t.system
        return user, system

    def rss(self) -> int:
        total = 0
        for p in self._procs():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float, marker: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise TargetFailed(
                    f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}"
                )
            ready = all(port_open(p) for p in self.ports.values())
            if ready and marker:
                ready = marker in self.log_path.read_text(errors="replace")
            if ready:
                return
            time.sleep(0.1)
        self.stop()
        raise TargetFailed(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def spawn(
    name: str,
    cmd: list[str],
    log_dir: Path,
    ports: dict[str, int],
    *,
    cwd: Path | None = None,
    env: dict | None = None,
) -> ServerProc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child keeps it; we close our copy below
    full_env = dict(os.environ)
    full_env.update(env or {})
    popen = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=str(cwd) if cwd else None,
        env=full_env,
        preexec_fn=_raise_fd_limit,
    )
    log.close()
    return ServerProc(name, popen, log_path, ports)


# --- redis, for ActionHero and the cluster scenario --------------------------------------


def start_redis(log_dir: Path, cpus: str | None) -> ServerProc:
    binary = shutil.which("redis-server")
    if binary is None:
        raise TargetUnavailable("redis-server not installed (apt-get install redis-server)")
    port = free_port()
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
        "--dir",
        str(log_dir),
    ]
    server = spawn("redis", pinned(cmd, cpus), log_dir, {"redis": port})
    server.wait_ready(10)
    return server


def _free_cluster_port() -> int:
    """A free port whose cluster-bus port (+10000, so at most 55535) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port + 10000))
            except OSError:
                continue
        return port
    raise TargetFailed("no free port pair for a Redis Cluster node")


def start_redis_cluster(log_dir: Path, masters: int = 3) -> list[ServerProc]:
    """A Redis Cluster: `masters` masters and one replica each, on free loopback ports.

    Returns every redis-server (masters first as created); the first one is the seed.
    """
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise TargetUnavailable("redis-server and redis-cli are needed for a Redis Cluster")
    servers: list[ServerProc] = []
    try:
        for _ in range(2 * masters):
            port = _free_cluster_port()
            directory = log_dir / f"rcluster-{port}"
            directory.mkdir(parents=True, exist_ok=True)
            cmd = [
                binary,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(directory / "nodes.conf"),
                "--cluster-node-timeout",
                "5000",
                "--port",
                str(port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ]
            servers.append(spawn(f"redis-{port}", cmd, log_dir, {"redis": port}))
        for server in servers:
            server.wait_ready(10)
        addresses = [f"{HOST}:{server.ports['redis']}" for server in servers]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while not all(_cluster_node_ready(cli, server.ports["redis"]) for server in servers):
            if time.monotonic() > deadline:
                raise TargetFailed("the Redis Cluster did not become healthy in 30 s")
            time.sleep(0.2)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def _cluster_node_ready(cli: str, port: int) -> bool:
    """cluster_state:ok, and a replica's link to its master up."""

    def ask(*args: str) -> str:
        done = subprocess.run([cli, "-p", str(port), *args], capture_output=True, text=True)
        return done.stdout

    if "cluster_state:ok" not in ask("cluster", "info"):
        return False
    replication = ask("info", "replication")
    return "role:slave" not in replication or "master_link_status:up" in replication


# --- targets ------------------------------------------------------------------------------


@dataclass
class Target:
    """A server under test as the load generator sees it."""

    name: str
    dialect: str
    needs_redis: bool = False  # ActionHero always publishes chat through Redis

    def available(self, python: str) -> str | None:
        """None when it can run here, else why not."""
        raise NotImplementedError

    def start(
        self,
        log_dir: Path,
        cpus: str | None,
        python: str,
        *,
        node_id: str = "a",
        redis_url: str | None = None,
        send_limit: int | None = None,
        redis_cluster: bool = False,
        rooms: int = 0,
    ) -> tuple[ServerProc, int]:
        """Start one node; returns it and the port clients connect to.

        `send_limit` (bytes a client may leave unread) is honoured by targets that have one;
        `redis_cluster` (the URL is a Redis Cluster seed) only by roomcast. `rooms` > 0
        creates rooms `r0`..`r<rooms-1>` besides `defaultRoom` (python-socketio's rooms
        need no creating).
        """
        raise NotImplementedError

    def version(self, python: str) -> str:
        return ""


def _python_has(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def _python_version_of(python: str, dist: str) -> str:
    out = subprocess.run(
        [python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else ""


#: ``[socket]`` and ``[web]`` ``write_delay`` (ms) of every roomcast node the bench starts
#: (``run.py --roomcast-write-delay``); 0 leaves the setting out.
ROOMCAST_WRITE_DELAY_MS = 0.0


def roomcast_source(python: str) -> dict:
    """Which roomcast ``python`` imports (PYTHONPATH included), so a result says which
    code it measured: this repo's or another checkout's, and that checkout's commit."""
    out = subprocess.run(
        [python, "-c", "import roomcast; print(roomcast.__file__)"],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        return {}
    package = Path(out.stdout.strip()).parent
    commit = subprocess.run(
        ["git", "-C", str(package), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(package), "status", "--porcelain", "--", "."],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "this_repo": package.is_relative_to(BENCH_DIR.parent),
        "commit": commit + ("+changes" if dirty else ""),
    }


class Roomcast(Target):
    def available(self, python: str) -> str | None:
        if not _python_has(python, "roomcast"):
            return "roomcast is not importable (pip install -e . from the repo root)"
        return None

    def start(
        self,
        log_dir,
        cpus,
        python,
        *,
        node_id="a",
        redis_url=None,
        send_limit=None,
        history_size=0,
        redis_cluster=False,
        rooms=0,
    ):
        web, sock = free_port(), free_port()
        cmd = [
            python,
            "-m",
            "roomcast",
            "start",
            "--bind",
            HOST,
            "--web-port",
            str(web),
            "--socket-port",
            str(sock),
            "--id",
            f"bench-{node_id}",
            "--log-level",
            "warning",
        ]
        if redis_url:
            cmd += ["--redis-url", redis_url]
        if redis_cluster:
            cmd.append("--redis-cluster")
        tables = ""
        for table in ("web", "socket"):
            lines = f"send_buffer_limit = {send_limit}\n" if send_limit else ""
            if ROOMCAST_WRITE_DELAY_MS:
                lines += f"write_delay = {ROOMCAST_WRITE_DELAY_MS}\n"
            tables += f"[{table}]\n{lines}" if lines else ""
        if history_size or rooms:
            tables += "[chat]\n"
        if history_size:
            tables += f"history_size = {history_size}\n"
        if rooms:
            names = ", ".join(f'"r{i}"' for i in range(rooms))
            tables += f'starting_chat_rooms = ["defaultRoom", {names}]\n'
        if tables:
            log_dir.mkdir(parents=True, exist_ok=True)
            delay = ROOMCAST_WRITE_DELAY_MS
            config = log_dir / (
                f"roomcast-{node_id}-{send_limit}-{history_size}-{rooms}-{delay}.toml"
            )
            config.write_text(tables)
            cmd += ["--config", str(config)]
        server = spawn(
            f"{self.name}-{node_id}", pinned(cmd, cpus), log_dir, {"web": web, "socket": sock}
        )
        # "roomcast ready" is an info line; we log at warning. Starting rooms are made one
        # by one before the ports open.
        server.wait_ready(30 + rooms / 50)
        return server, (sock if self.dialect == "roomcast-tcp" else web)

    def version(self, python):
        return _python_version_of(python, "roomcast")


class NaiveWebsockets(Target):
    def available(self, python):
        return None if _python_has(python, "websockets") else "websockets not installed"

    def start(
        self, log_dir, cpus, python, *, node_id="a", redis_url=None, send_limit=None, rooms=0
    ):
        if redis_url:
            raise TargetUnavailable("the naive websockets loop is single-process only")
        port = free_port()
        cmd = [python, str(PEERS_DIR / "websockets_server.py"), "--port", str(port)]
        if rooms:
            cmd += ["--rooms", str(rooms)]
        server = spawn(f"{self.name}-{node_id}", pinned(cmd, cpus), log_dir, {"web": port})
        server.wait_ready(20)
        return server, port

    def version(self, python):
        return _python_version_of(python, "websockets")


class FloorTCP(Target):
    """peers/floor_server.py: selectors + one socket.send per member (the per-delivery floor)."""

    def available(self, python):
        return None

    def start(
        self, log_dir, cpus, python, *, node_id="a", redis_url=None, send_limit=None, rooms=0
    ):
        if rooms:
            raise TargetUnavailable("the floor server has one room")
        if redis_url:
            raise TargetUnavailable("the floor server is single-process only")
        port = free_port()
        cmd = [python, str(PEERS_DIR / "floor_server.py"), "--port", str(port)]
        server = spawn(f"{self.name}-{node_id}", pinned(cmd, cpus), log_dir, {"socket": port})
        server.wait_ready(20)
        return server, port

    def version(self, python):
        return "python " + ".".join(map(str, sys.version_info[:3]))


class SocketIOPeer(Target):
    def available(self, python):
        for mod in ("socketio", "uvicorn"):
            if not _python_has(python, mod):
                return (
                    f"{mod} not installed in this interpreter "
                    "(run bench/setup.sh and use bench/.env/bin/python)"
                )
        return None

    def start(
        self, log_dir, cpus, python, *, node_id="a", redis_url=None, send_limit=None, rooms=0
    ):
        port = free_port()  # its rooms exist once someone enters them
        cmd = [python, str(PEERS_DIR / "socketio_server.py"), "--port", str(port)]
        if redis_url:
            cmd += ["--redis-url", redis_url]
        server = spawn(f"{self.name}-{node_id}", pinned(cmd, cpus), log_dir, {"web": port})
        server.wait_ready(20)
        return server, port

    def version(self, python):
        return (
            "python-socketio "
            + _python_version_of(python, "python-socketio")
            + ", uvicorn "
            + _python_version_of(python, "uvicorn")
        )


class RoomcastAsgi(Target):
    """peers/roomcast_asgi_server.py: roomcast.asgi.app under uvicorn, the node's own ports off."""

    def available(self, python):
        for mod in ("roomcast.asgi", "uvicorn"):
            if not _python_has(python, mod):
                return f"{mod} not importable (run bench/setup.sh and use bench/.env/bin/python)"
        return None

    def start(
        self, log_dir, cpus, python, *, node_id="a", redis_url=None, send_limit=None, rooms=0
    ):
        if rooms:
            raise TargetUnavailable("the roomcast-asgi peer has no rooms option")
        port = free_port()
        cmd = [
            python,
            str(PEERS_DIR / "roomcast_asgi_server.py"),
            "--port",
            str(port),
            "--id",
            f"bench-asgi-{node_id}",
        ]
        if redis_url:
            cmd += ["--redis-url", redis_url]
        if send_limit:
            cmd += ["--send-limit", str(send_limit)]
        server = spawn(f"{self.name}-{node_id}", pinned(cmd, cpus), log_dir, {"web": port})
        server.wait_ready(30)  # uvicorn listens once the lifespan has started the node
        return server, port

    def version(self, python):
        return (
            "roomcast "
            + _python_version_of(python, "roomcast")
            + ", uvicorn "
            + _python_version_of(python, "uvicorn")
        )


class ActionheroPeer(Target):
    def available(self, python):
        if shutil.which("node") is None:
            return "node not installed"
        if not (ACTIONHERO_DIR / "dist" / "server.js").exists():
            return "ActionHero project not built (run bench/setup.sh)"
        if shutil.which("redis-server") is None:
            return "redis-server not installed"
        return None

    def start(
        self, log_dir, cpus, python, *, node_id="a", redis_url=None, send_limit=None, rooms=0
    ):
        if redis_url is None:
            raise TargetFailed("ActionHero needs a Redis URL")
        port = free_port()
        env = {
            "AH_BENCH_ROOMS": str(rooms),  # its startingChatRooms (setup.sh's zz_bench.ts)
            "PORT": str(port),
            "REDIS_URL": redis_url,
            "LOG_LEVEL": "warning",
            "NODE_ENV": "production",
            "ACTIONHERO_CONFIG_OVERRIDES": f'{{"general":{{"id":"bench-{node_id}"}}}}',
        }
        cmd = ["node", "dist/server.js"]
        server = spawn(
            f"{self.name}-{node_id}",
            pinned(cmd, cpus),
            log_dir,
            {"web": port},
            cwd=ACTIONHERO_DIR,
            env=env,
        )
        server.wait_ready(40)
        return server, port

    def version(self, python):
        try:
            import json

            pkg = json.loads(
                (ACTIONHERO_DIR / "node_modules" / "actionhero" / "package.json").read_text()
            )
            node = subprocess.run(
                ["node", "--version"], capture_output=True, text=True
            ).stdout.strip()
            return f"actionhero {pkg['version']}, node {node}"
        except (OSError, ValueError, KeyError):
            return ""


TARGETS: dict[str, Target] = {
    "roomcast-ws": Roomcast("roomcast-ws", "roomcast-ws"),
    "roomcast-tcp": Roomcast("roomcast-tcp", "roomcast-tcp"),
    "roomcast-asgi": RoomcastAsgi("roomcast-asgi", "roomcast-ws"),
    "socketio": SocketIOPeer("socketio", "socketio"),
    "actionhero": ActionheroPeer("actionhero", "actionhero", needs_redis=True),
    "websockets": NaiveWebsockets("websockets", "websockets"),
    "floor-tcp": FloorTCP("floor-tcp", "roomcast-tcp"),
}


def python_for_targets() -> str:
    return sys.executable
