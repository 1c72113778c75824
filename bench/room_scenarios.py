"""The many-rooms scenarios: `rooms` (R rooms x M members, random senders) and `churn`
(connections joining a random room, saying a little and leaving, at a rising rate).

Both run the target as one node and as two nodes on one Redis the bench starts itself;
every room is made at start (`r0`..`r<N-1>`, see `servers.Target.start`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time

from generator import Generator
from scenarios import Deployment, Settings, _finish_profile, _machine_busy_s, _start_profile
from servers import ServerProc, Target, TargetUnavailable

CHURN_P99_LIMIT_MS = 20.0  # churn: highest rate whose roomAdd p99 is at most this
CHURN_DONE_SHARE = 0.95  # ... and at least this share of the offered joins+leaves done


def room_plan(rooms: int, members: int, connections: int) -> list[list[str]]:
    """Which rooms each connection joins: `rooms` x `members` memberships over at most
    `connections` connections (a connection holds several when there are more).

    Membership m is in room m // members and on connection m % connections, so a room's
    members are consecutive connections: with two nodes (connection i on node i % 2)
    every room has members on both.
    """
    total = rooms * members
    count = min(total, connections)
    plan: list[list[str]] = [[] for _ in range(count)]
    for m in range(total):
        plan[m % count].append(f"r{m // members}")
    return plan


def _redis_port(dep: Deployment) -> int | None:
    redis = dep.redis
    if isinstance(redis, ServerProc):
        return redis.ports["redis"]
    return None


def _redis_cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    )
    return done.stdout


def command_stats(port: int) -> dict[str, int]:
    """Calls per command so far (INFO commandstats), the bench's own commands left out."""
    calls: dict[str, int] = {}
    for line in _redis_cli(port, "info", "commandstats").splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if m and m.group(1) not in ("info", "client|list", "pubsub|channels", "ping"):
            calls[m.group(1)] = int(m.group(2))
    return calls


def subscriptions(port: int) -> dict:
    """Channels subscribed right now: summed over subscriber connections (CLIENT LIST
    `sub=`), the largest one, and how many distinct channels exist (PUBSUB CHANNELS)."""
    subs = [int(m) for m in re.findall(r" sub=(\d+)", _redis_cli(port, "client", "list"))]
    subs = [n for n in subs if n]
    channels = _redis_cli(port, "pubsub", "channels").split()
    return {
        "subscribed": sum(subs),
        "max_per_client": max(subs, default=0),
        "channels": len(channels),
    }


class SubscriptionSampler:
    """Samples `subscriptions` every `interval` s in a thread, each sample time-stamped."""

    def __init__(self, port: int, interval: float = 0.5) -> None:
        self.port, self.interval = port, interval
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sample = subscriptions(self.port)
            except (OSError, subprocess.SubprocessError):
                sample = {}
            sample["t"] = round(time.monotonic() - self._t0, 2)
            self.samples.append(sample)
            self._stop.wait(self.interval)

    def mark(self, label: str) -> None:
        self.samples.append({"t": round(time.monotonic() - self._t0, 2), "mark": label})

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join(5)
        return self.samples


def hset_cost(port: int, redis: ServerProc, n: int = 100_000) -> dict:
    """Redis's own CPU per HSET, from redis-benchmark against the scenario's Redis:
    one command per round trip (50 clients) and pipelined 16 deep."""
    bench = shutil.which("redis-benchmark")
    if bench is None:
        return {"error": "redis-benchmark not installed"}
    out: dict = {}
    for depth in (1, 16):
        cpu0 = redis.cpu_s()
        subprocess.run(
            [
                bench,
                "-p",
                str(port),
                "-t",
                "hset",
                "-n",
                str(n),
                "-c",
                "50",
                "-P",
                str(depth),
                "-q",
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        out[f"redis_us_per_hset_pipeline_{depth}"] = round((redis.cpu_s() - cpu0) * 1e6 / n, 3)
    _redis_cli(port, "del", "myhash")
    return out


# --- rooms ----------------------------------------------------------------------------------


def rooms(target: Target, s: Settings, log) -> dict:
    """R rooms x M members; random members say at a fixed total message rate.

    One node, then two nodes on one Redis (members of each room on both), each shape
    on the same deployment with a fresh set of connections.
    """
    most = max(r for r, _ in s.rooms_shapes)
    out: dict = {"messages_per_s": s.rooms_messages_per_s, "runs": []}
    for nodes in s.rooms_nodes:
        try:
            dep = Deployment(target, s, nodes=nodes, pin=nodes == 1, rooms=most)
        except TargetUnavailable as exc:
            out["runs"].append({"nodes": nodes, "skipped": str(exc)})
            log(f"  rooms, {nodes} nodes: skipped ({exc})")
            continue
        try:
            for shape in s.rooms_shapes:
                try:
                    res = _rooms_run(dep, s, nodes, *shape)
                except RuntimeError as exc:  # this shape failed (joins refused): the next
                    out["runs"].append(
                        {
                            "nodes": nodes,
                            "rooms": shape[0],
                            "members_per_room": shape[1],
                            "skipped": str(exc)[:300],
                        }
                    )
                    log(f"  rooms {nodes} node(s), {shape[0]} x {shape[1]}: {exc}")
                    dep.check_alive()
                    continue
                out["runs"].append(res)
                log(
                    f"  rooms {nodes} node(s), {shape[0]} x {shape[1]}: "
                    f"{res['server_cpu_us_per_message']} us/msg "
                    f"({res['server_cpu_us_per_message_above_idle']} above idle), "
                    f"{res['server_cpu_us_per_delivery']} us/deliv, p50 "
                    f"{res['latency_ms']['p50']} p99 {res['latency_ms']['p99']} ms, "
                    f"loss {100 * res['loss']:.3f}%, rss {res['server_rss_mb']} MB, "
                    f"other {res['other_cpu_pct']}%"
                )
        finally:
            dep.stop()
    return out


def _rooms_run(dep: Deployment, s: Settings, nodes: int, room_count: int, members: int) -> dict:
    plan = room_plan(room_count, members, s.rooms_connections)
    gen = Generator(
        s.python,
        dep.target.dialect,
        dep.ports,
        workers=s.workers,
        cpus=s.gen_cpus if nodes == 1 else None,
        message_size=s.message_size,
    )
    try:
        rss0 = dep.rss()
        conn = gen.connect(len(plan), s.connect_concurrency, deadline=300, rooms=plan)
        if conn["joined"] < len(plan):
            raise RuntimeError(
                f"{conn['failed']} of {len(plan)} connections did not join: {conn['errors']}"
            )
        time.sleep(1.0)
        rss1 = dep.rss()
        # what the nodes burn with nobody talking (heartbeats, pings): reported, and
        # subtracted in the "above idle" figure
        idle0, t0 = dep.cpu_s(), time.perf_counter()
        time.sleep(s.rooms_idle_s)
        idle_rate = (dep.cpu_s() - idle0) / (time.perf_counter() - t0)
        rate = s.rooms_messages_per_s
        if s.warmup_s > 0:
            gen.measure(dep.cpu_s, rate, s.warmup_s, 1, drain_s=s.drain_s, per_message=members)
        aux0, busy0 = dep.aux_cpu_s(), _machine_busy_s()
        spy = None
        if s.profile_dir is not None and room_count * members >= 10000:
            name = f"{dep.target.name}-rooms-{nodes}n-{room_count}x{members}"
            spy = _start_profile(dep, s, name)
        w = gen.measure(dep.cpu_s, rate, s.window_s, 1, drain_s=s.drain_s, per_message=members)
        profile = _finish_profile(*spy) if spy is not None else None
        aux, busy = dep.aux_cpu_s() - aux0, _machine_busy_s() - busy0
        dep.check_alive()
        res = w.as_dict()
        other = busy - w.server_cpu_s - w.gen_cpu_s - aux
        res.update(
            nodes=nodes,
            rooms=room_count,
            members_per_room=members,
            connections=len(plan),
            rooms_per_connection=len(plan[0]),
            server_cpu_us_per_message=round(w.server_cpu_s * 1e6 / w.sent, 2) if w.sent else None,
            server_cpu_us_per_message_above_idle=round(
                (w.server_cpu_s - idle_rate * w.wall_s) * 1e6 / w.sent, 2
            )
            if w.sent
            else None,
            server_idle_cpu_pct=round(100 * idle_rate, 2),
            redis_cpu_us_per_message=round(aux * 1e6 / w.sent, 2) if w.sent and dep.redis else None,
            other_cpu_pct=round(max(0.0, 100 * other / w.wall_s), 1) if w.wall_s else None,
            server_rss_mb=round(rss1 / 2**20, 1),
            rss_per_connection_kib=round((rss1 - rss0) / len(plan) / 1024, 2),
            connect=conn,
        )
        if profile is not None:
            res["profile"] = profile
        return res
    finally:
        gen.close()
        dep.settle()


# --- churn ----------------------------------------------------------------------------------


def churn(target: Target, s: Settings, log) -> dict:
    """Connections joining a random room, saying a little and leaving, at a rising rate.

    One node on Redis, then two nodes on one Redis; steps of `churn_rates` joins+leaves
    per second per node until the joins stop keeping up (or a request fails); the
    sustained rate is the highest step whose roomAdd p99 is at most 20 ms.
    """
    out: dict = {"rooms": s.churn_rooms, "connections": s.churn_connections, "runs": []}
    for nodes in s.churn_nodes:
        try:
            dep = Deployment(
                target, s, nodes=nodes, pin=nodes == 1, rooms=s.churn_rooms, redis=True
            )
        except TargetUnavailable as exc:
            out["runs"].append({"nodes": nodes, "skipped": str(exc)})
            log(f"  churn, {nodes} nodes: skipped ({exc})")
            continue
        try:
            out["runs"].append(_churn_run(dep, s, nodes, log))
        finally:
            dep.stop()
    return out


def _churn_run(dep: Deployment, s: Settings, nodes: int, log) -> dict:
    port = _redis_port(dep)
    assert port is not None and isinstance(dep.redis, ServerProc)
    gen = Generator(
        s.python,
        dep.target.dialect,
        dep.ports,
        workers=s.workers,
        cpus=s.gen_cpus if nodes == 1 else None,
        message_size=s.message_size,
    )
    run: dict = {"nodes": nodes, "steps": []}
    sampler = None
    try:
        conn = gen.connect(
            s.churn_connections,
            s.connect_concurrency,
            deadline=300,
            rooms=[[] for _ in range(s.churn_connections)],
        )
        if conn["joined"] < s.churn_connections:
            raise RuntimeError(
                f"{conn['failed']} of {s.churn_connections} did not connect: {conn['errors']}"
            )
        run["connect"] = conn
        time.sleep(1.0)
        # Redis's and the nodes' CPU with everyone connected and nobody joining
        cpu0, aux0, t0 = dep.cpu_s(), dep.aux_cpu_s(), time.perf_counter()
        time.sleep(s.rooms_idle_s)
        wall = time.perf_counter() - t0
        idle_server, idle_redis = (dep.cpu_s() - cpu0) / wall, (dep.aux_cpu_s() - aux0) / wall
        run["server_idle_cpu_pct"] = round(100 * idle_server, 2)
        run["redis_idle_cpu_pct"] = round(100 * idle_redis, 2)
        gen.churn(s.churn_rates[0] * nodes / 2, 1.0, s.churn_rooms, s.churn_says)  # warm-up
        sampler = SubscriptionSampler(port)
        best: dict | None = None
        for per_node in s.churn_rates:
            cycles = per_node * nodes / 2  # a cycle is one join and one leave
            sampler.mark(f"{per_node}/s per node")
            stats0 = command_stats(port)
            spy = None
            if s.profile_dir is not None:
                name = f"{dep.target.name}-churn-{nodes}n-{int(per_node)}"
                spy = _start_profile(dep, s, name, seconds=s.churn_step_s)
            cpu0, aux0, busy0 = dep.cpu_s(), dep.aux_cpu_s(), _machine_busy_s()
            t0 = time.perf_counter()
            step = gen.churn(cycles, s.churn_step_s, s.churn_rooms, s.churn_says)
            wall = time.perf_counter() - t0
            if spy is not None:
                step["profile"] = _finish_profile(*spy)
            server, redis = dep.cpu_s() - cpu0, dep.aux_cpu_s() - aux0
            busy = _machine_busy_s() - busy0
            stats1 = command_stats(port)
            dep.check_alive()
            joins = step["joins"]
            ops = joins + step["leaves"]
            calls = {k: v - stats0.get(k, 0) for k, v in stats1.items() if v - stats0.get(k, 0)}
            step.update(
                offered_ops_per_s_per_node=per_node,
                ops_per_s_per_node=round(ops / step["seconds"] / nodes, 1),
                server_cpu_pct=round(100 * server / wall, 1),
                server_cpu_us_per_join=round(server * 1e6 / joins, 1) if joins else None,
                redis_cpu_pct=round(100 * redis / wall, 1),
                redis_cpu_us_per_join=round(redis * 1e6 / joins, 2) if joins else None,
                redis_cpu_us_per_join_above_idle=round((redis - idle_redis * wall) * 1e6 / joins, 2)
                if joins
                else None,
                redis_commands_per_join=round(sum(calls.values()) / joins, 2) if joins else None,
                redis_calls_per_join={
                    k: round(v / joins, 3) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
                }
                if joins
                else {},
                generator_cpu_pct=round(100 * step["generator_cpu_s"] / wall, 1),
                other_cpu_pct=round(
                    max(0.0, 100 * (busy - server - redis - step["generator_cpu_s"]) / wall), 1
                ),
            )
            p99 = step["join_ms"]["p99"]
            kept_up = (
                ops >= CHURN_DONE_SHARE * per_node * nodes * step["seconds"] and not step["failed"]
            )
            ok = kept_up and p99 is not None and p99 <= CHURN_P99_LIMIT_MS
            step["ok"] = ok
            run["steps"].append(step)
            log(
                f"  churn {nodes} node(s) {per_node}/s per node: done "
                f"{step['ops_per_s_per_node']}/s per node, roomAdd p50 "
                f"{step['join_ms']['p50']} p99 {p99} ms, server {step['server_cpu_us_per_join']} "
                f"us/join ({step['server_cpu_pct']}%), redis {step['redis_cpu_us_per_join']} "
                f"us/join, {step['redis_commands_per_join']} cmds/join, "
                f"gen {step['generator_cpu_pct']}%, other {step['other_cpu_pct']}%"
                + ("" if ok else f" -- over the limit ({step['failures'] or 'p99/rate'})")
            )
            if ok and (best is None or step["ops_per_s_per_node"] > best["ops_per_s_per_node"]):
                best = step
            # A step over the p99 limit that still kept up goes on (on a shared machine the
            # p99 is the first to suffer), so CPU per join is seen at every rate it holds.
            if not kept_up:
                break
            dep.settle(5.0)
        run["sustained_ops_per_s_per_node"] = best["ops_per_s_per_node"] if best else 0
        run["best"] = best
        sampler.mark("done")
        time.sleep(s.churn_after_s)  # channels held after the last leave (lazy unsubscribe)
        run["subscriptions"] = sampler.stop()
        sampler = None
        run["hset"] = hset_cost(port, dep.redis)
        return run
    finally:
        if sampler is not None:
            sampler.stop()
        gen.close()
