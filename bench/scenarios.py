"""The benchmark scenarios. Each starts its own server process(es) and stops them.

Every scenario returns a JSON-able dict; nothing here judges the numbers.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from generator import Generator, Window
from servers import (
    Roomcast,
    ServerProc,
    Target,
    TargetUnavailable,
    start_redis,
    start_redis_cluster,
)

LOSS_LIMIT = 0.001  # ramp: highest rate with loss <= 0.1 %
P99_LIMIT_MS = 50.0  # ... and p99 <= 50 ms
GEN_BOUND_PCT = 90.0  # generator CPU above this share of its core: the generator is the limit
OTHER_LOAD_PCT = 20.0  # a failed ramp step with more foreign CPU than this is tried again


@dataclass
class Settings:
    python: str
    log_dir: Path
    server_cpus: str | None = None
    gen_cpus: str | None = None
    aux_cpus: str | None = None  # redis
    workers: int = 1
    message_size: int = 64
    senders: int = 4
    warmup_s: float = 2.0
    window_s: float = 5.0
    drain_s: float = 5.0  # wait at most this long for late deliveries
    fanout_sizes: list[int] = field(default_factory=lambda: [100, 1000, 5000])
    fanout_deliveries_per_s: float = 20000.0
    ramp_members: int = 1000
    ramp_start_deliveries_per_s: float = 20000.0
    ramp_factor: float = 1.4
    ramp_step_s: float = 3.0
    ramp_max_steps: int = 14
    connections: int = 5000
    # in-flight connect+join handshakes; kept under the smallest default listen backlog
    # (websockets: 100) so SYN retries (1 s) never pose as a slow server
    connect_concurrency: int = 64
    # the WebSocket client of the load generator: picows, or loadgen's LeanWSClient (a
    # prebuilt upgrade request and in-place frame parsing: far cheaper per connection)
    ws_client: str = "picows"
    cluster_members: int = 1000
    cluster_deliveries_per_s: float = 20000.0
    scaling_nodes: list[int] = field(default_factory=lambda: [1, 2, 3])
    scaling_idle_s: float = 3.0  # Redis's own CPU with the nodes up and nobody talking
    stall_members: int = 1000
    # what the stalled member is owed must outgrow the kernel's socket buffers (up to
    # 4 MiB on loopback) plus the server's own limit within the run: 16 KiB messages
    stall_message_size: int = 16384
    stall_deliveries_per_s: float = 15000.0
    stall_s: float = 25.0
    # roomcast's per-connection send limit for this scenario (its default, 8 MiB, would take
    # minutes to reach at this rate); peers without such a setting keep their own behaviour
    stall_send_limit: int | None = 256 * 1024
    # fanout-history: roomcast with [chat] history_size = this (every message kept in a
    # capped list by one Lua script that also publishes it)
    fanout_history_size: int = 100
    # rooms: (rooms, members per room) shapes over at most rooms_connections connections
    rooms_shapes: list[tuple[int, int]] = field(
        default_factory=lambda: [(100, 2), (100, 5), (2000, 5), (10000, 2)]
    )
    rooms_connections: int = 10000
    rooms_messages_per_s: float = 500.0
    rooms_nodes: list[int] = field(default_factory=lambda: [1, 2])
    rooms_idle_s: float = 2.0  # the nodes' CPU with everyone connected and nobody talking
    # churn: connections joining a random room of churn_rooms, saying, leaving
    churn_rooms: int = 2000
    churn_connections: int = 5000
    churn_nodes: list[int] = field(default_factory=lambda: [1, 2])
    # offered joins+leaves per second per node, one step each until one fails
    churn_rates: list[float] = field(
        default_factory=lambda: [500.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6500.0]
    )
    churn_step_s: float = 4.0
    churn_says: int = 1
    churn_after_s: float = 3.0  # channel counts sampled this long after the last step
    profile_dir: Path | None = None  # py-spy the server during fanout's largest room
    quiet_wait_s: float = 30.0  # ramp: how long a disturbed step waits for a quiet machine


@dataclass
class SharedRedis:
    """A Redis (one server, or every server of a Redis Cluster) that outlives deployments."""

    servers: list[ServerProc]
    cluster: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.servers[0].ports['redis']}/0"

    def cpu_s(self) -> float:
        return sum(server.cpu_s() for server in self.servers)

    def output_bytes(self) -> int:
        """Bytes every server has sent so far (to clients and replicas): INFO stats."""
        total = 0
        for server in self.servers:
            done = subprocess.run(
                ["redis-cli", "-p", str(server.ports["redis"]), "info", "stats"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            for line in done.stdout.splitlines():
                if line.startswith("total_net_output_bytes:"):
                    total += int(line.split(":", 1)[1])
        return total

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class Deployment:
    """The processes behind one target for one scenario: nodes plus an optional redis.

    With `shared` the nodes use that Redis (or Redis Cluster), which `stop` leaves running.
    """

    def __init__(
        self,
        target: Target,
        settings: Settings,
        nodes: int = 1,
        pin: bool = True,
        send_limit: int | None = None,
        history_size: int = 0,
        shared: SharedRedis | None = None,
        rooms: int = 0,
        redis: bool = False,
    ) -> None:
        self.target, self.settings = target, settings
        self.redis: ServerProc | SharedRedis | None = shared
        self._owns_redis = shared is None
        self.nodes: list[ServerProc] = []
        self.ports: list[int] = []
        try:
            redis_url = shared.url if shared else None
            if shared is None and (target.needs_redis or nodes > 1 or redis):
                self.redis = start_redis(settings.log_dir, settings.aux_cpus if pin else None)
                redis_url = f"redis://127.0.0.1:{self.redis.ports['redis']}/0"
            extra: dict[str, object] = {}
            if history_size:  # only roomcast keeps history; other targets never get it
                extra["history_size"] = history_size
            if shared and shared.cluster:
                extra["redis_cluster"] = True
            if rooms:
                extra["rooms"] = rooms
            for i in range(nodes):
                node, port = target.start(
                    settings.log_dir,
                    settings.server_cpus if pin else None,
                    settings.python,
                    node_id="ab"[i] if nodes <= 2 else str(i),
                    redis_url=redis_url,
                    send_limit=send_limit,
                    **extra,
                )
                self.nodes.append(node)
                self.ports.append(port)
        except BaseException:
            self.stop()
            raise

    def cpu_s(self) -> float:
        return sum(n.cpu_s() for n in self.nodes)

    def rss(self) -> int:
        return sum(n.rss() for n in self.nodes)

    def user_system_s(self) -> tuple[float, float]:
        pairs = [n.user_system_s() for n in self.nodes]
        return sum(p[0] for p in pairs), sum(p[1] for p in pairs)

    def aux_cpu_s(self) -> float:
        return self.redis.cpu_s() if self.redis else 0.0

    def check_alive(self) -> None:
        for n in self.nodes:
            if not n.alive():
                raise RuntimeError(f"{n.name} died (exit {n.popen.returncode}):\n{n.log_tail()}")

    def settle(self, max_s: float = 10.0) -> None:
        """Wait until the servers stop burning CPU (a backlog from an overloaded step)."""
        deadline = time.monotonic() + max_s
        last = self.cpu_s()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.cpu_s()
            if now - last < 0.05:  # under 10 % of one core
                return
            last = now

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        if self.redis and self._owns_redis:
            self.redis.stop()


def _generator(dep: Deployment, s: Settings, workers: int | None = None) -> Generator:
    return Generator(
        s.python,
        dep.target.dialect,
        dep.ports,
        workers=workers or s.workers,
        cpus=s.gen_cpus,
        message_size=s.message_size,
        ws_client=s.ws_client,
    )


def _window(
    dep: Deployment,
    gen: Generator,
    s: Settings,
    members: int,
    deliveries_per_s: float,
    duration: float,
) -> tuple[Window, dict]:
    senders = min(s.senders, members)
    aux0 = dep.aux_cpu_s()
    busy0 = _machine_busy_s()
    us0 = dep.user_system_s()
    w = gen.measure(dep.cpu_s, deliveries_per_s / members, duration, senders, drain_s=s.drain_s)
    us1 = dep.user_system_s()
    busy1 = _machine_busy_s()
    aux = dep.aux_cpu_s() - aux0
    out = w.as_dict()
    out["senders"] = senders
    user, system = us1[0] - us0[0], us1[1] - us0[1]
    # the kernel's share of the server's CPU (sending on loopback includes the receive path)
    out["server_system_share"] = round(system / (user + system), 3) if user + system > 0 else None
    # CPU that neither the server, the generator nor redis used: other load on the machine
    other = (busy1 - busy0) - w.server_cpu_s - w.gen_cpu_s - aux
    out["other_cpu_pct"] = round(max(0.0, 100 * other / w.wall_s), 1) if w.wall_s else None
    if dep.redis:
        out["redis_cpu_us_per_delivery"] = round(aux * 1e6 / w.received, 3) if w.received else None
    out["generator_bound"] = bool(
        out["generator_cpu_pct"] and out["generator_cpu_pct"] > GEN_BOUND_PCT
    )
    dep.check_alive()
    return w, out


def _wait_machine_quiet(max_s: float, busy_pct: float = 15.0) -> None:
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline and psutil.cpu_percent(interval=1.0) >= busy_pct:
        pass


def _machine_busy_s() -> float:
    t = psutil.cpu_times()
    return (
        t.user
        + t.nice
        + t.system
        + getattr(t, "irq", 0)
        + getattr(t, "softirq", 0)
        + getattr(t, "steal", 0)
    )


def _warmup(
    dep: Deployment, gen: Generator, s: Settings, members: int, deliveries_per_s: float
) -> None:
    if s.warmup_s > 0:
        gen.measure(
            dep.cpu_s,
            deliveries_per_s / members,
            s.warmup_s,
            min(s.senders, members),
            drain_s=s.drain_s,
        )


def fanout(target: Target, s: Settings, log, history_size: int = 0) -> dict:
    """N members in one room, S senders at a fixed offered delivery rate, for each N."""
    dep = Deployment(target, s, history_size=history_size)
    gen = _generator(dep, s)
    out: dict = {"offered_deliveries_per_s": s.fanout_deliveries_per_s, "sizes": {}}
    if history_size:
        out["history_size"] = history_size
    try:
        for n in s.fanout_sizes:
            conn = gen.connect(n, s.connect_concurrency)
            if conn["joined"] == 0 and gen.members == 0:
                raise RuntimeError(f"no member could join: {conn['errors']}")
            members = gen.members
            _warmup(dep, gen, s, members, s.fanout_deliveries_per_s)
            spy = None
            if s.profile_dir is not None and n == s.fanout_sizes[-1]:
                spy = _start_profile(dep, s, f"{target.name}-fanout-{n}")
            _, res = _window(dep, gen, s, members, s.fanout_deliveries_per_s, s.window_s)
            if spy is not None:
                res["profile"] = _finish_profile(*spy)
            res["connect"] = conn
            res["server_rss_mb"] = round(dep.rss() / 2**20, 1)
            out["sizes"][str(n)] = res
            log(f"  fanout N={members}: {_line(res)}")
    finally:
        gen.close()
        dep.stop()
    return out


def _start_profile(dep: Deployment, s: Settings, name: str, seconds: float | None = None):
    """py-spy the first node for the measured window (Python servers only)."""
    import shutil
    import subprocess

    spy = shutil.which("py-spy") or str(Path(s.python).parent / "py-spy")
    if not Path(spy).exists() or dep.target.name == "actionhero":
        return None
    assert s.profile_dir is not None
    s.profile_dir.mkdir(parents=True, exist_ok=True)
    out = s.profile_dir / f"{name}.txt"
    proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(dep.nodes[0].popen.pid),
            "--rate",
            "250",
            "--duration",
            str(int(seconds if seconds is not None else s.window_s + 1)),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)  # let it attach
    return proc, out


def _finish_profile(proc, out: Path) -> dict:
    try:
        proc.wait(30)
    except Exception:
        proc.kill()
        proc.wait(5)
    if not out.exists():
        return {"error": "py-spy wrote nothing"}
    from servers import REPO_DIR

    text = out.read_text().replace(str(REPO_DIR), "<repo>")
    out.write_text(text)
    own: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        total += n
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + n
    top = sorted(own.items(), key=lambda kv: -kv[1])[:15]
    return {
        "file": out.name,
        "samples": total,
        "top_self": [[name, round(100 * n / total, 1)] for name, n in top] if total else [],
    }


def _ok(res: dict) -> bool:
    p99 = res["latency_ms"]["p99"]
    return res["loss"] <= LOSS_LIMIT and p99 is not None and p99 <= P99_LIMIT_MS


def ramp(target: Target, s: Settings, log) -> dict:
    """Raise the offered rate until p99 > 50 ms or loss > 0.1 %.

    Then check p99 at a quarter of the best rate.
    """
    dep = Deployment(target, s)
    gen = _generator(dep, s)
    out: dict = {"members": s.ramp_members, "steps": []}
    try:
        gen.connect(s.ramp_members, s.connect_concurrency)
        members = gen.members
        if members == 0:
            raise RuntimeError("no member could join")
        _warmup(dep, gen, s, members, s.ramp_start_deliveries_per_s)
        rate = s.ramp_start_deliveries_per_s
        best: dict | None = None
        failed_at: float | None = None
        stop_reason = "max steps"
        for _ in range(s.ramp_max_steps):
            _, res = _window(dep, gen, s, members, rate, s.ramp_step_s)
            res["ok"] = _ok(res)
            out["steps"].append(res)
            log(f"  ramp offered {rate:,.0f}/s: {_line(res)}")
            if not res["ok"] and (res.get("other_cpu_pct") or 0) > OTHER_LOAD_PCT:
                # something else loaded the machine: wait for quiet, then try the step again
                res["disturbed"] = True
                dep.settle()
                _wait_machine_quiet(s.quiet_wait_s)
                _, res = _window(dep, gen, s, members, rate, s.ramp_step_s)
                res["ok"] = _ok(res)
                res["retry"] = True
                out["steps"].append(res)
                log(f"  ramp offered {rate:,.0f}/s (again): {_line(res)}")
            if not res["ok"]:
                failed_at, stop_reason = rate, "p99 or loss over the limit"
                break
            best = res
            if res["generator_bound"]:
                stop_reason = "generator CPU saturated"
                break
            rate *= s.ramp_factor
        if failed_at is not None and best is None:
            # even the first step was too much: halve until a step holds (bounded)
            for _ in range(4):
                dep.settle()
                rate /= 2
                _, res = _window(dep, gen, s, members, rate, s.ramp_step_s)
                res["ok"] = _ok(res)
                out["steps"].append(res)
                log(f"  ramp offered {rate:,.0f}/s: {_line(res)}")
                if res["ok"]:
                    best = res
                    break
        elif failed_at is not None and best is not None:
            # one refinement step between the last good and the first bad rate
            dep.settle()
            mid = (best["offered_deliveries_per_s"] * failed_at) ** 0.5
            _, res = _window(dep, gen, s, members, mid, s.ramp_step_s)
            res["ok"] = _ok(res)
            res["refinement"] = True
            out["steps"].append(res)
            log(f"  ramp offered {mid:,.0f}/s: {_line(res)}")
            if res["ok"]:
                best = res
        out["stop_reason"] = stop_reason
        out["max_sustainable_deliveries_per_s"] = best["deliveries_per_s"] if best else 0
        out["server_cpu_pct_at_max"] = best["server_cpu_pct"] if best else None
        out["generator_cpu_pct_at_max"] = best["generator_cpu_pct"] if best else None
        if best:
            dep.settle()
            quarter = best["offered_deliveries_per_s"] / 4
            _, res = _window(dep, gen, s, members, quarter, s.window_s)
            out["quarter_rate"] = res
            log(f"  ramp quarter {quarter:,.0f}/s: {_line(res)}")
    finally:
        gen.close()
        dep.stop()
    return out


def connections(target: Target, s: Settings, log) -> dict:
    """C idle connections, each joined to the room: connect+join rate and RSS per connection."""
    dep = Deployment(target, s)
    gen = _generator(dep, s)
    try:
        warm = gen.connect(20, 20)  # first connections pay one-off costs (imports, buffers)
        if warm["joined"] == 0:
            raise RuntimeError(f"no member could join: {warm['errors']}")
        time.sleep(1.0)
        rss0 = dep.rss()
        cpu0 = dep.cpu_s()
        spy = None
        if s.profile_dir is not None:
            spy = _start_profile(dep, s, f"{target.name}-connections", seconds=3)
        conn = gen.connect(20 + s.connections, s.connect_concurrency)
        cpu1 = dep.cpu_s()
        time.sleep(2.0)
        rss1 = dep.rss()
        still_open = gen.open_members()
        dep.check_alive()
        joined = conn["joined"]
        out = {
            "connections": s.connections,
            "joined": joined,
            "failed": conn["failed"],
            "errors": conn["errors"],
            "connect_join_per_s": conn["joins_per_s"],
            "connect_seconds": conn["seconds"],
            "generator_cpu_pct_while_connecting": conn["generator_cpu_pct"],
            "server_cpu_pct_while_connecting": round(100 * (cpu1 - cpu0) / conn["seconds"], 1)
            if conn["seconds"]
            else None,
            "server_cpu_us_per_connect_join": round((cpu1 - cpu0) * 1e6 / joined, 1)
            if joined
            else None,
            "rss_before_mb": round(rss0 / 2**20, 1),
            "rss_after_mb": round(rss1 / 2**20, 1),
            "rss_per_connection_kib": round((rss1 - rss0) / joined / 1024, 2) if joined else None,
            "open_after_settle": still_open - 20,
        }
        if spy is not None:
            out["profile"] = _finish_profile(*spy)
        log(
            f"  connections {joined}/{s.connections}: {out['connect_join_per_s']}/s, "
            f"{out['rss_per_connection_kib']} KiB each"
        )
        return out
    finally:
        gen.close()
        dep.stop()


def cluster(target: Target, s: Settings, log) -> dict:
    """Two nodes on one Redis, members split across them, senders on both."""
    try:
        dep = Deployment(target, s, nodes=2, pin=False)
    except TargetUnavailable as exc:
        return {"skipped": str(exc)}
    gen = Generator(
        s.python,
        target.dialect,
        dep.ports,
        workers=s.workers,
        cpus=None,
        message_size=s.message_size,
    )
    try:
        conn = gen.connect(s.cluster_members, s.connect_concurrency)
        members = gen.members
        if members == 0:
            raise RuntimeError(f"no member could join: {conn['errors']}")
        _warmup(dep, gen, s, members, s.cluster_deliveries_per_s)
        _, res = _window(dep, gen, s, members, s.cluster_deliveries_per_s, s.window_s)
        res["connect"] = conn
        res["nodes"] = 2
        log(f"  cluster N={members}: {_line(res)}")
        return res
    finally:
        gen.close()
        dep.stop()


def cluster_scaling(target: Target, s: Settings, log) -> dict:
    """The cluster scenario with 1, 2 and 3 nodes on one Redis and (roomcast only) on a
    3-master Redis Cluster; then the room's members on one node while the others idle.

    Every run has its own nodes; the Redis of one layout serves all of its runs.
    """
    layouts = ["redis", "redis-cluster"] if isinstance(target, Roomcast) else ["redis"]
    runs: list[dict] = []
    for layout in layouts:
        try:
            if layout == "redis-cluster":
                shared = SharedRedis(start_redis_cluster(s.log_dir), cluster=True)
            else:
                shared = SharedRedis([start_redis(s.log_dir, None)])
        except TargetUnavailable as exc:
            runs.append({"redis": layout, "skipped": str(exc)})
            continue
        try:
            shapes = [(n, n) for n in s.scaling_nodes]
            shapes += [(n, 1) for n in s.scaling_nodes if n > 1]
            for nodes, member_nodes in shapes:
                res = _scaling_run(target, s, shared, nodes, member_nodes)
                res.update(redis=layout, nodes=nodes, member_nodes=member_nodes)
                runs.append(res)
                log(
                    f"  {layout}, {nodes} nodes, members on {member_nodes}: {_line(res)}, "
                    f"redis {res.get('redis_cpu_us_per_delivery')} us/delivery"
                )
        finally:
            shared.stop()
    return {"runs": runs}


def _scaling_run(
    target: Target, s: Settings, shared: SharedRedis, nodes: int, member_nodes: int
) -> dict:
    dep = Deployment(target, s, nodes=nodes, pin=False, shared=shared)
    gen = Generator(
        s.python,
        target.dialect,
        dep.ports[:member_nodes],  # members alternate over these nodes; the rest idle
        workers=s.workers,
        cpus=None,
        message_size=s.message_size,
    )
    try:
        conn = gen.connect(s.cluster_members, s.connect_concurrency)
        members = gen.members
        if members == 0:
            raise RuntimeError(f"no member could join: {conn['errors']}")
        # What Redis burns with nothing said (cluster gossip, heartbeats, watchdog pings):
        # subtracted below, so what remains is Redis's cost of the messages themselves.
        idle0, t0 = dep.aux_cpu_s(), time.perf_counter()
        time.sleep(s.scaling_idle_s)
        idle_rate = (dep.aux_cpu_s() - idle0) / (time.perf_counter() - t0)
        _warmup(dep, gen, s, members, s.cluster_deliveries_per_s)
        aux0, t0, out0 = dep.aux_cpu_s(), time.perf_counter(), shared.output_bytes()
        w, res = _window(dep, gen, s, members, s.cluster_deliveries_per_s, s.window_s)
        aux, wall = dep.aux_cpu_s() - aux0, time.perf_counter() - t0
        # Deterministic where CPU is noisy: what Redis sent per message said.
        sent = shared.output_bytes() - out0
        res["redis_output_bytes_per_message"] = round(sent / w.sent) if w.sent else None
        res["redis_idle_cpu_pct"] = round(100 * idle_rate, 2)
        res["redis_cpu_us_per_delivery_above_idle"] = (
            round((aux - idle_rate * wall) * 1e6 / w.received, 3) if w.received else None
        )
        res["connect"] = conn
        return res
    finally:
        gen.close()
        dep.stop()


def stall(target: Target, s: Settings, log) -> dict:
    """One member stops reading: the others' p99 before and during, and the server's memory."""
    dep = Deployment(target, s, send_limit=s.stall_send_limit)
    gen = Generator(
        s.python,
        target.dialect,
        dep.ports,
        workers=s.workers,
        cpus=s.gen_cpus,
        message_size=s.stall_message_size,
    )
    try:
        conn = gen.connect(s.stall_members, s.connect_concurrency)
        members = gen.members
        if members < 2:
            raise RuntimeError(f"too few members joined: {conn['errors']}")
        _warmup(dep, gen, s, members, s.stall_deliveries_per_s)
        _, before = _window(dep, gen, s, members, s.stall_deliveries_per_s, s.window_s)
        log(f"  stall, before: {_line(before)}")
        rss0 = dep.rss()
        stalled = gen.stall(1)
        _, during = _window(dep, gen, s, members, s.stall_deliveries_per_s, s.stall_s)
        rss1 = dep.rss()
        # the stalled member gets nothing: loss among the others only
        others_expected = during["messages_sent"] * (members - stalled)
        during["loss_among_others"] = (
            round(max(0.0, 1 - during["deliveries"] / others_expected), 6)
            if others_expected
            else None
        )
        log(f"  stall, during: {_line(during)}")
        # a paused socket never sees the server's close: read again, then count
        gen.resume()
        open_after = gen.open_members()
        for _ in range(20):
            if open_after < members:
                break
            time.sleep(0.25)
            open_after = gen.open_members()
        backlog = during["messages_sent"] * (s.stall_message_size + 100)
        p99a, p99b = before["latency_ms"]["p99"], during["latency_ms"]["p99"]
        return {
            "members": members,
            "message_size": s.stall_message_size,
            "before": before,
            "during": during,
            "p99_ratio": round(p99b / p99a, 3) if p99a and p99b else None,
            "rss_before_stall_mb": round(rss0 / 2**20, 1),
            "rss_after_stall_mb": round(rss1 / 2**20, 1),
            "rss_growth_mb": round((rss1 - rss0) / 2**20, 1),
            "bytes_owed_to_stalled_client_mb": round(backlog / 2**20, 1),
            "stalled_client_disconnected": open_after < members,
            "send_limit": s.stall_send_limit if isinstance(target, Roomcast) else None,
            "server_log_tail": dep.nodes[0].log_tail(5),
        }
    finally:
        gen.close()
        dep.stop()


def _line(res: dict) -> str:
    lat = res["latency_ms"]
    return (
        f"{res['deliveries_per_s']:,}/s loss {100 * res['loss']:.3f}% "
        f"p50 {lat['p50']} p99 {lat['p99']} max {lat['max']} ms, "
        f"server {res['server_cpu_us_per_delivery']} us/delivery ({res['server_cpu_pct']}% cpu), "
        f"gen {res['generator_cpu_pct']}% cpu, other {res.get('other_cpu_pct')}% cpu"
    )


def fanout_history(target: Target, s: Settings, log) -> dict:
    """fanout in a room that keeps history (roomcast only): what keeping it costs."""
    if not isinstance(target, Roomcast):
        raise TargetUnavailable("history is a roomcast setting")
    return fanout(target, s, log, history_size=s.fanout_history_size)


SCENARIOS = {
    "fanout": fanout,
    "fanout-history": fanout_history,
    "ramp": ramp,
    "connections": connections,
    "stall": stall,
    "cluster": cluster,
    "cluster-scaling": cluster_scaling,
}
