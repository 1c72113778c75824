"""Python opcodes a node runs per connection, per function: where connect+join spends.

    python bench/opcodes.py connect --transport ws --count 200 --out ws.json [--redis]
    PYTHONPATH=<other checkout>/src python bench/opcodes.py connect ... --out old.json
    python bench/opcodes.py diff old.json ws.json [--top 40]

``connect`` runs ``roomcast start`` (embedded store, or ``--redis`` a ``redis-server``
started here on a free loopback port) with ``sys.settrace`` counting every opcode of every
Python function, but only between two signals sent around the measured work: ``--count``
clients that connect, read the welcome and join the room one after another (after 30 for
warm-up), as ``bench/instructions.py connect`` does. It writes the counts to ``--out``
and prints the total per connection. ``diff`` prints the functions whose opcodes per
connection changed most between two such files, and the totals per package.

A CPython opcode costs some 80 instructions here, C work (fakeredis aside, which is
Python) not counted: the figure finds where the Python goes; ``bench/instructions.py``
is the one to quote. Tracing makes the node some 20 times slower. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from instructions import free_port, join, start_redis


def traced_node(arguments: list[str]) -> None:
    """Run ``roomcast`` with ``arguments``; SIGUSR1 starts counting, SIGUSR2 writes the
    counts to ``$ROOMCAST_OPCODES_OUT``."""
    counts: Counter[tuple[str, str]] = Counter()
    counting = [False]

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode":
            code = frame.f_code
            counts[(code.co_filename, code.co_qualname)] += 1
        return local

    def called(frame: FrameType, event: str, arg: object) -> Any:
        if not counting[0]:
            return None
        frame.f_trace_opcodes = True
        return local

    def start(*_: object) -> None:
        counts.clear()
        counting[0] = True

    def dump(*_: object) -> None:
        counting[0] = False
        rows = [[path, name, count] for (path, name), count in counts.items()]
        out = Path(os.environ["ROOMCAST_OPCODES_OUT"])
        partial = out.with_name(out.name + ".partial")
        partial.write_text(json.dumps(rows))
        partial.replace(out)  # whole, or not there: the reader polls for it

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, dump)
    sys.settrace(called)
    from roomcast.cli import main

    sys.exit(main(arguments))


def connect(transport: str, count: int, out: str, redis: bool) -> None:
    folder = tempfile.mkdtemp(prefix="roomcast-opcodes-")
    socket_port, web_port = free_port(), free_port()
    Path(folder, "node.toml").write_text("[web]\nheartbeat = 0\n")
    store: list[str] = []
    redis_server = None
    if redis:
        redis_server, url = start_redis()
        store = ["--redis-url", url]
    log_path = Path(folder, "node.log")
    command = [
        sys.executable,
        __file__,
        "node",
        "start",
        "--config",
        f"{folder}/node.toml",
        "--socket-port",
        str(socket_port),
        "--web-port",
        str(web_port),
        *store,
    ]
    environment = dict(os.environ, ROOMCAST_OPCODES_OUT=str(Path(out).resolve()))
    with open(log_path, "wb") as log:
        node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    kept: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 120
        while b"roomcast ready" not in log_path.read_bytes():
            if time.monotonic() > deadline or node.poll() is not None:
                raise RuntimeError(f"the node did not start: see {log_path}")
            time.sleep(0.2)
        for _ in range(30):  # warm-up
            kept.append(join(transport, socket_port, web_port))
        time.sleep(1.0)
        node.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        for _ in range(count):
            kept.append(join(transport, socket_port, web_port))
        time.sleep(0.5)
        Path(out).unlink(missing_ok=True)
        node.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not Path(out).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the node wrote no counts")
            time.sleep(0.2)
    finally:
        for sock in kept:
            sock.close()
        node.kill()
        node.wait(30)
        if redis_server is not None:
            redis_server.kill()
            redis_server.wait(30)
    rows = json.loads(Path(out).read_text())
    Path(out).write_text(json.dumps({"count": count, "transport": transport, "rows": rows}))
    total = sum(row[2] for row in rows) / count
    print(f"{total:.0f} opcodes per connection ({transport}, {count} connections)")


def _short(path: str) -> str:
    return re.sub(r".*/(site-packages|src|python3\.\d+)/", "", path)


def _package(path: str) -> str:
    short = _short(path)
    return short.split("/")[1] if short.startswith("roomcast/") else short.split("/")[0]


def load(path: str) -> dict[tuple[str, str], float]:
    data = json.loads(Path(path).read_text())
    per: dict[tuple[str, str], float] = {}
    for file, name, count in data["rows"]:
        key = (_short(file), name)
        per[key] = per.get(key, 0.0) + count / data["count"]
    return per


def diff(before_path: str, after_path: str, top: int) -> None:
    before, after = load(before_path), load(after_path)
    print(f"total per connection: {sum(before.values()):.0f} -> {sum(after.values()):.0f}")
    changed = sorted(
        set(before) | set(after), key=lambda k: -abs(after.get(k, 0) - before.get(k, 0))
    )
    for key in changed[:top]:
        old, new = before.get(key, 0.0), after.get(key, 0.0)
        print(f"{old:8.1f} {new:8.1f} {new - old:+8.1f}  {key[0]} {key[1]}")
    packages: dict[str, list[float]] = {}
    for which, counts in enumerate((before, after)):
        for (file, _), count in counts.items():
            packages.setdefault(_package(file), [0.0, 0.0])[which] += count
    print("per package:")
    for package, (old, new) in sorted(packages.items(), key=lambda item: -max(item[1]))[:15]:
        print(f"{old:8.1f} {new:8.1f} {new - old:+8.1f}  {package}")


def main() -> None:
    if sys.argv[1:2] == ["node"]:
        traced_node(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("connect", help="count a node's opcodes per connect+join")
    measure.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
    measure.add_argument("--count", type=int, default=200)
    measure.add_argument("--out", required=True)
    measure.add_argument(
        "--redis", action="store_true", help="a redis-server, not the embedded store"
    )
    compare = commands.add_parser("diff", help="compare two counts")
    compare.add_argument("before")
    compare.add_argument("after")
    compare.add_argument("--top", type=int, default=40)
    options = parser.parse_args()
    if options.command == "connect":
        connect(options.transport, options.count, options.out, options.redis)
    else:
        diff(options.before, options.after, options.top)


if __name__ == "__main__":
    main()
