"""roomcast benchmark suite: one entry command.

    python bench/run.py [--quick] [--servers a,b,...] [--scenarios fanout,ramp,...]

Servers: roomcast-ws, roomcast-tcp, roomcast-asgi, socketio, actionhero, websockets,
floor-tcp.
Scenarios: fanout, ramp, connections, stall, cluster, cluster-scaling, rooms (R rooms x
M members, random senders, one node and two), churn (join a random room, say, leave, at a
rising rate; one node and two on Redis); fanout-history (roomcast only: fanout in a room
with [chat] history_size = 100).
Each target runs as its own subprocess; results go to bench/results/<timestamp>.json.
The exit status is non-zero only when the harness breaks (or, with --quick, when
a target cannot be measured at all); numbers never fail a run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers as servers_module
from generator import HarnessError, scratch_dir
from report import print_summary
from room_scenarios import churn, rooms
from scenarios import SCENARIOS, Settings
from servers import BENCH_DIR, TARGETS, TargetFailed, TargetUnavailable

ALL_SERVERS = [
    "roomcast-ws",
    "roomcast-tcp",
    "roomcast-asgi",
    "socketio",
    "actionhero",
    "websockets",
    "floor-tcp",
]
SCENARIOS.update(rooms=rooms, churn=churn)
ALL_SCENARIOS = [
    "fanout",
    "ramp",
    "connections",
    "stall",
    "cluster",
    "cluster-scaling",
    "rooms",
    "churn",
]
#: Not part of a default run; ask for it with --scenarios.
EXTRA_SCENARIOS = ["fanout-history"]
CLUSTER_SERVERS = {"roomcast-ws", "roomcast-tcp", "roomcast-asgi", "socketio", "actionhero"}
SCALING_SERVERS = {"roomcast-ws", "roomcast-tcp", "socketio"}
ROOMS_SERVERS = {"roomcast-ws", "roomcast-tcp", "socketio", "actionhero", "websockets"}
CHURN_SERVERS = {"roomcast-ws", "roomcast-tcp", "socketio", "actionhero"}


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        import psutil

        mem = psutil.virtual_memory().total
    except ImportError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(python: str, servers: list[str]) -> dict:
    out = {}
    for mod in ("picows", "websockets", "uvloop", "orjson", "psutil"):
        try:
            import importlib.metadata as md

            out[mod] = md.version(mod)
        except Exception:
            out[mod] = None
    for name in servers:
        try:
            out[name] = TARGETS[name].version(python)
        except Exception:
            out[name] = None
    if shutil.which("redis-server"):
        v = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.split()
        out["redis-server"] = next((x.split("=", 1)[1] for x in v if x.startswith("v=")), None)
    return out


def wait_quiet(log, max_s: float, busy_pct: float = 15.0) -> float:
    """Wait (bounded) until the machine is nearly idle before a scenario; returns seconds waited."""
    import psutil

    start = time.monotonic()
    while True:
        busy = psutil.cpu_percent(interval=2.0)
        waited = time.monotonic() - start
        if busy < busy_pct or waited >= max_s:
            if waited > 2.5:
                log(f"  (waited {waited:.0f} s for a quiet machine; now {busy:.0f} % busy)")
            return round(waited, 1)


def settings_for(args: argparse.Namespace, python: str, log_dir: Path) -> Settings:
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    s = Settings(
        python=python,
        log_dir=log_dir,
        server_cpus="0" if pin else None,
        gen_cpus="1" if pin else None,
        aux_cpus="1" if pin else None,
        workers=args.workers,
        ws_client=args.ws_client,
    )
    if args.quick:
        s.fanout_sizes = [100, 500]
        s.fanout_deliveries_per_s = 10000
        s.warmup_s, s.window_s, s.drain_s = 0.5, 3.0, 3.0
        s.connections = 500
        s.ramp_members, s.ramp_max_steps, s.ramp_step_s = 200, 4, 2.0
        s.cluster_members = 200
        s.stall_members, s.stall_s = 200, 5.0
    if args.sizes:
        s.fanout_sizes = [int(x) for x in args.sizes.split(",")]
    if args.rate:
        s.fanout_deliveries_per_s = s.cluster_deliveries_per_s = args.rate
    if args.window:
        s.window_s = args.window
    if args.connections:
        s.connections = args.connections
    if args.message_size:
        s.message_size = args.message_size
    if args.profile:
        s.profile_dir = BENCH_DIR / "results" / "profiles"
    if args.rooms_shapes:
        s.rooms_shapes = [
            (int(r), int(m)) for r, m in (x.split("x") for x in args.rooms_shapes.split(","))
        ]
    if args.rooms_connections:
        s.rooms_connections = args.rooms_connections
    if args.rooms_rate:
        s.rooms_messages_per_s = args.rooms_rate
    if args.nodes:
        s.rooms_nodes = s.churn_nodes = [int(x) for x in args.nodes.split(",")]
    if args.churn_connections:
        s.churn_connections = args.churn_connections
    if args.churn_rates:
        s.churn_rates = [float(x) for x in args.churn_rates.split(",")]
    return s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="under 60 s: roomcast-ws and websockets, small fanout only",
    )
    parser.add_argument("--servers", help=f"comma list of {','.join(ALL_SERVERS)}")
    parser.add_argument(
        "--scenarios", help=f"comma list of {','.join(ALL_SCENARIOS + EXTRA_SCENARIOS)}"
    )
    parser.add_argument("--sizes", help="fanout room sizes, e.g. 100,1000,5000")
    parser.add_argument("--rate", type=float, help="offered deliveries/s for fanout and cluster")
    parser.add_argument("--window", type=float, help="measured window per step, seconds")
    parser.add_argument(
        "--connections", type=int, help="idle connections in the connections scenario"
    )
    parser.add_argument(
        "--message-size", type=int, help="chat message length in bytes (default 64)"
    )
    parser.add_argument("--workers", type=int, default=1, help="load-generator processes")
    parser.add_argument(
        "--ws-client",
        choices=("picows", "lean"),
        default="picows",
        help="the generator's WebSocket client: picows, or a lean one on a plain asyncio "
        "protocol (much cheaper per connect; for the connections scenario)",
    )
    parser.add_argument(
        "--rooms-shapes", help="rooms scenario: ROOMSxMEMBERS list, e.g. 100x5,2000x5,10000x2"
    )
    parser.add_argument(
        "--rooms-connections", type=int, help="rooms scenario: connections budget (10000)"
    )
    parser.add_argument("--rooms-rate", type=float, help="rooms scenario: messages/s (500)")
    parser.add_argument("--nodes", help="rooms and churn: node counts, e.g. 1,2 (default)")
    parser.add_argument("--churn-connections", type=int, help="churn: connections (5000)")
    parser.add_argument(
        "--churn-rates", help="churn: offered joins+leaves/s per node, one step each"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin server and generator to separate cores"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy each Python server during fanout's largest room and while connecting "
        "(collapsed stacks in bench/results/profiles/)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each scenario wait up to this long for the machine to be < 15 %% busy",
    )
    parser.add_argument(
        "--roomcast-write-delay",
        type=float,
        default=0.0,
        metavar="MS",
        help="[socket] and [web] write_delay of the roomcast targets (default 0: off)",
    )
    parser.add_argument("--out", help="result file (default bench/results/<timestamp>.json)")
    parser.add_argument(
        "--table", metavar="RESULT_JSON", help="print the markdown table of a result file and exit"
    )
    parser.add_argument(
        "--median",
        metavar="RESULT_JSON,...",
        help="print the cluster-scaling table with each row's median over these files and exit",
    )
    args = parser.parse_args(argv)

    if args.table:
        from report import markdown

        print(markdown(json.loads(Path(args.table).read_text())))
        return 0
    if args.median:
        from report import scaling_median_markdown

        files = args.median.split(",")
        print(scaling_median_markdown([json.loads(Path(f).read_text()) for f in files]))
        return 0

    try:
        import picows  # noqa: F401
    except ImportError:
        print(
            "picows is not installed in this interpreter: run bench/setup.sh --quick "
            "(or bench/setup.sh and use bench/.env/bin/python)",
            file=sys.stderr,
        )
        return 2

    servers = (
        args.servers.split(",")
        if args.servers
        else (["roomcast-ws", "websockets"] if args.quick else ALL_SERVERS)
    )
    scenarios = (
        args.scenarios.split(",")
        if args.scenarios
        else (["fanout"] if args.quick else ALL_SCENARIOS)
    )
    for name in servers:
        if name not in TARGETS:
            parser.error(f"unknown server {name}")
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name}")

    python = sys.executable
    servers_module.ROOMCAST_WRITE_DELAY_MS = args.roomcast_write_delay
    log_dir = scratch_dir()
    settings = settings_for(args, python, log_dir)
    started = dt.datetime.now(dt.UTC)
    result: dict = {
        "started": started.isoformat(timespec="seconds"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "machine": machine(),
        "versions": versions(python, servers),
        "settings": {
            k: v for k, v in vars(settings).items() if k not in ("python", "log_dir", "profile_dir")
        },
        "roomcast_write_delay_ms": args.roomcast_write_delay,
        "roomcast_source": servers_module.roomcast_source(python),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "results": {},
        "skipped": {},
        "errors": {},
    }

    def log(msg: str) -> None:
        print(msg, flush=True)

    broken = False
    t_start = time.monotonic()
    for name in servers:
        target = TARGETS[name]
        why = target.available(python)
        if why:
            result["skipped"][name] = why
            log(f"{name}: skipped ({why})")
            if args.quick:
                broken = True
            continue
        for scenario in scenarios:
            if scenario == "cluster" and name not in CLUSTER_SERVERS:
                continue
            if scenario == "cluster-scaling" and name not in SCALING_SERVERS:
                continue
            if scenario == "rooms" and name not in ROOMS_SERVERS:
                continue
            if scenario == "churn" and name not in CHURN_SERVERS:
                continue
            log(f"{name} / {scenario}")
            if args.wait_quiet:
                waited = wait_quiet(log, args.wait_quiet)
                result.setdefault("waited_for_quiet_s", {})[f"{name}/{scenario}"] = waited
            try:
                res = SCENARIOS[scenario](target, settings, log)
                result["results"].setdefault(name, {})[scenario] = res
            except TargetUnavailable as exc:
                result["skipped"][f"{name}/{scenario}"] = str(exc)
                log(f"  skipped: {exc}")
            except HarnessError:
                raise
            except (TargetFailed, RuntimeError, OSError, KeyError, ValueError) as exc:
                result["errors"][f"{name}/{scenario}"] = f"{type(exc).__name__}: {exc}"
                log(f"  error: {type(exc).__name__}: {exc}")
                if args.quick:
                    broken = True
                    traceback.print_exc()
    result["seconds"] = round(time.monotonic() - t_start, 1)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    out = (
        Path(args.out)
        if args.out
        else BENCH_DIR / "results" / (started.strftime("%Y%m%dT%H%M%SZ") + ".json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    text = json.dumps(result, indent=1, sort_keys=False) + "\n"
    # keep this machine's paths out of a file that may be committed
    text = text.replace(str(log_dir), "<scratch>").replace(str(BENCH_DIR.parent), "<repo>")
    tmp.write_text(text)
    tmp.replace(out)
    print_summary(result, log)
    log(f"results: {os.path.relpath(out)} ({result['seconds']} s)")
    shutil.rmtree(log_dir, ignore_errors=True) if not broken else log(
        f"server logs kept in {log_dir}"
    )
    return 1 if broken else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        print(f"harness error: {exc}", file=sys.stderr)
        sys.exit(3)
