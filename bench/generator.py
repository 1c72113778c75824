"""The controller's side of the load generator: worker processes and their numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from servers import BENCH_DIR, HOST, pinned

HIST_RATIO = 1.02  # must match loadgen.py


class HarnessError(Exception):
    """The harness itself broke (a worker died or answered nonsense)."""


class WorkerProc:
    def __init__(self, python: str, config: dict, cpus: str | None) -> None:
        cmd = pinned([python, str(BENCH_DIR / "loadgen.py"), json.dumps(config)], cpus)
        self.popen = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def send(self, cmd: dict) -> None:
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write(json.dumps(cmd) + "\n")
            self.popen.stdin.flush()
        except BrokenPipeError as exc:
            raise HarnessError(f"load generator exited ({self.popen.poll()})") from exc

    def recv(self) -> dict:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise HarnessError(f"load generator exited ({self.popen.wait(5)})")
        reply = json.loads(line)
        if "error" in reply:
            raise HarnessError(f"load generator: {reply['error']}")
        return reply

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                self.send({"cmd": "close"})
                self.popen.wait(5)
            except (HarnessError, subprocess.TimeoutExpired, OSError):
                pass
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Window:
    """What one measured phase produced, merged over every worker."""

    phase: int
    sent: int
    members: int
    received: int
    seconds: float  # sending window
    server_cpu_s: float  # from the start of sending until deliveries stopped
    gen_cpu_s: float
    wall_s: float  # the same span, wall clock
    hist: dict[int, int]
    max_ns: int
    sender_late_max_ms: float = 0.0

    @property
    def expected(self) -> int:
        return self.sent * self.members

    @property
    def loss(self) -> float:
        return max(0.0, 1.0 - self.received / self.expected) if self.expected else 0.0

    def percentile_ms(self, q: float) -> float | None:
        total = sum(self.hist.values())
        if not total:
            return None
        rank = q * total
        seen = 0
        for idx in sorted(self.hist):
            seen += self.hist[idx]
            if seen >= rank:
                # geometric middle of the bucket [r**i, r**(i+1)) microseconds
                return HIST_RATIO ** (idx + 0.5) / 1000.0
        return self.max_ns / 1e6

    def as_dict(self) -> dict:
        p50, p99 = self.percentile_ms(0.50), self.percentile_ms(0.99)
        return {
            "messages_sent": self.sent,
            "members": self.members,
            "offered_msgs_per_s": round(self.sent / self.seconds, 1) if self.seconds else None,
            "offered_deliveries_per_s": round(self.expected / self.seconds)
            if self.seconds
            else None,
            "deliveries": self.received,
            "deliveries_per_s": round(self.received / self.seconds) if self.seconds else None,
            "loss": round(self.loss, 6),
            "latency_ms": {
                "p50": _r(p50),
                "p99": _r(p99),
                "max": _r(self.max_ns / 1e6),
                "samples": sum(self.hist.values()),
            },
            "server_cpu_us_per_delivery": _r(self.server_cpu_s * 1e6 / self.received)
            if self.received
            else None,
            "server_cpu_pct": _r(100 * self.server_cpu_s / self.wall_s) if self.wall_s else None,
            "generator_cpu_us_per_delivery": _r(self.gen_cpu_s * 1e6 / self.received)
            if self.received
            else None,
            "generator_cpu_pct": _r(100 * self.gen_cpu_s / self.wall_s) if self.wall_s else None,
            "sender_late_max_ms": _r(self.sender_late_max_ms),
            "window_s": _r(self.seconds),
            "span_s": _r(self.wall_s),
        }


def _r(x: float | None, digits: int = 3) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(x, digits)


class Generator:
    """A set of loadgen worker processes sharing one target and one room."""

    def __init__(
        self,
        python: str,
        dialect: str,
        ports: list[int],
        *,
        workers: int = 1,
        cpus: str | None = None,
        message_size: int = 64,
        room: str = "defaultRoom",
        sample_every: int = 10,
        ws_client: str = "picows",
    ) -> None:
        self.workers = [
            WorkerProc(
                python,
                {
                    "dialect": dialect,
                    "targets": [[HOST, p] for p in ports],
                    "room": room,
                    "message_size": message_size,
                    "worker_id": i,
                    "sample_every": sample_every,
                    "ws_client": ws_client,
                },
                cpus,
            )
            for i in range(workers)
        ]
        self.members = 0
        self.phase = 0

    def close(self) -> None:
        for w in self.workers:
            w.stop()

    def _all(self, cmds: list[dict]) -> list[dict]:
        for w, c in zip(self.workers, cmds, strict=True):
            w.send(c)
        return [w.recv() for w in self.workers]

    def connect(
        self,
        total: int,
        concurrency: int = 200,
        timeout: float = 15,
        deadline: float = 120,
        rooms: list[list[str]] | None = None,
    ) -> dict:
        """Grow to `total` joined members, spread evenly over the workers.

        `rooms`, one list per new connection, says which rooms each joins (default: the
        generator's room).
        """
        add = max(0, total - self.members)
        per = [
            add // len(self.workers) + (1 if i < add % len(self.workers) else 0)
            for i in range(len(self.workers))
        ]
        cmds = []
        first = 0
        for n in per:
            cmd = {
                "cmd": "connect",
                "count": n,
                "concurrency": max(1, concurrency // len(self.workers)),
                "timeout": timeout,
                "deadline": deadline,
            }
            if rooms is not None:
                cmd["rooms"] = rooms[first : first + n]
            first += n
            cmds.append(cmd)
        start = time.perf_counter()
        replies = self._all(cmds)
        elapsed = time.perf_counter() - start
        joined = sum(r["joined"] for r in replies)
        self.members = sum(r["total"] for r in replies)
        errors: dict[str, int] = {}
        for r in replies:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        gen_cpu = sum(r["cpu_s"] for r in replies)
        return {
            "requested": add,
            "joined": joined,
            "failed": add - joined,
            "seconds": round(elapsed, 3),
            "generator_cpu_pct": round(100 * gen_cpu / elapsed, 1) if elapsed > 0 else None,
            "joins_per_s": round(joined / elapsed, 1) if elapsed > 0 else None,
            "members": self.members,
            "errors": errors,
        }

    def stats(self, phase: int) -> list[dict]:
        return self._all([{"cmd": "stats", "phase": phase}] * len(self.workers))

    def open_members(self) -> int:
        return sum(s["open"] for s in self.stats(-1))

    def delivered(self) -> int:
        return sum(s["delivered"] for s in self.stats(-1))

    def measure(
        self,
        server_cpu,
        rate: float,
        duration: float,
        senders: int,
        drain_s: float = 2.0,
        per_message: int | None = None,
    ) -> Window:
        """Worker 0's first `senders` members say `rate` msg/s for `duration`.

        Counts every delivery, waiting up to `drain_s` for the last ones. With
        `per_message` (the members of each room) every message comes from a membership
        picked at random and is owed to that many members, not to every connection.
        """
        self.phase += 1
        phase = self.phase
        before = self.stats(phase)
        members = sum(s["open"] for s in before) if per_message is None else per_message
        delivered0 = sum(s["delivered"] for s in before)
        gen0 = sum(s["cpu_s"] for s in before)
        cpu0 = server_cpu()
        t0 = time.perf_counter()
        w0 = self.workers[0]
        w0.send(
            {
                "cmd": "send",
                "phase": phase,
                "rate": rate,
                "duration": duration,
                "senders": senders,
                "random": per_message is not None,
            }
        )
        sent_reply = w0.recv()
        t_sent = time.perf_counter()
        sent = sent_reply["sent"]
        expected = sent * members
        # drain: stop when everything arrived, or nothing new came for a while, or the bound
        last, last_change = -1, time.perf_counter()
        deadline = t_sent + drain_s
        while True:
            stats = self.stats(phase)
            received = sum(s["delivered"] for s in stats) - delivered0
            now = time.perf_counter()
            if received >= expected or now >= deadline:
                break
            if received != last:
                last, last_change = received, now
            elif now - last_change > min(1.0, drain_s):
                break
            time.sleep(0.05)
        t_end = time.perf_counter()
        cpu1 = server_cpu()
        hist: dict[int, int] = {}
        max_ns = 0
        for s in stats:
            for k, v in s["stats"]["hist"].items():
                hist[int(k)] = hist.get(int(k), 0) + v
            max_ns = max(max_ns, s["stats"]["max_ns"])
        gen1 = sum(s["cpu_s"] for s in stats)
        return Window(
            phase=phase,
            sent=sent,
            members=members,
            received=received,
            seconds=sent / rate if rate > 0 else t_sent - t0,
            server_cpu_s=cpu1 - cpu0,
            gen_cpu_s=gen1 - gen0,
            wall_s=t_end - t0,
            hist=hist,
            max_ns=max_ns,
            sender_late_max_ms=sent_reply.get("late_max_ms", 0.0),
        )

    def churn(self, rate: float, duration: float, rooms: int, says: int = 1) -> dict:
        """Join-say-leave cycles at `rate` per second (over all workers) for `duration`:
        how many joins and leaves succeeded, `roomAdd` and `roomLeave` latency."""
        self.phase += 1
        per = rate / len(self.workers)
        replies = self._all(
            [
                {
                    "cmd": "churn",
                    "phase": self.phase,
                    "rate": per,
                    "duration": duration,
                    "rooms": rooms,
                    "says": says,
                }
                for _ in self.workers
            ]
        )
        out: dict = {"offered_cycles_per_s": rate}
        for key in ("started", "joins", "leaves", "says", "failed", "starved", "hanging"):
            out[key] = sum(r[key] for r in replies)
        failures: dict[str, int] = {}
        for r in replies:
            for k, v in r["failures"].items():
                failures[k] = failures.get(k, 0) + v
        out["failures"] = failures
        out["seconds"] = max(r["seconds"] for r in replies)
        out["late_max_ms"] = round(max(r["late_max_ms"] for r in replies), 3)
        out["generator_cpu_s"] = sum(r["cpu_s"] for r in replies)
        for name in ("join", "leave"):
            hist: dict[int, int] = {}
            max_ns = 0
            for r in replies:
                for k, v in r[name]["hist"].items():
                    hist[int(k)] = hist.get(int(k), 0) + v
                max_ns = max(max_ns, r[name]["max_ns"])
            out[f"{name}_ms"] = {
                "p50": _r(percentile_ms(hist, 0.5, max_ns)),
                "p99": _r(percentile_ms(hist, 0.99, max_ns)),
                "max": _r(max_ns / 1e6),
            }
        return out

    def stall(self, count: int) -> int:
        self.workers[-1].send({"cmd": "stall", "count": count})
        return self.workers[-1].recv()["stalled"]

    def resume(self) -> int:
        self.workers[-1].send({"cmd": "resume"})
        return self.workers[-1].recv()["resumed"]


def percentile_ms(hist: dict[int, int], q: float, max_ns: int) -> float | None:
    """The q-quantile of a 2 % bucket histogram (loadgen's), in milliseconds."""
    total = sum(hist.values())
    if not total:
        return None
    seen = 0
    for idx in sorted(hist):
        seen += hist[idx]
        if seen >= q * total:
            return HIST_RATIO ** (idx + 0.5) / 1000.0
    return max_ns / 1e6


def python_executable() -> str:
    return sys.executable


def scratch_dir() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="roomcast-bench-"))
