"""``roomcast start --workers N``: N node processes sharing the listening ports.

The supervisor runs no node itself. It starts N copies of the same ``roomcast start``
command, each with id ``<id>-<i>`` and ``SO_REUSEPORT`` listeners (the kernel spreads new
connections over them), starts again a worker that dies, and on SIGTERM/SIGINT stops
them all gracefully. Workers share rooms through Redis like any nodes; a dead worker's
members are reaped like any dead node's (and by the worker itself when it comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from roomcast.config import Config

log = logging.getLogger("roomcast.workers")

#: A worker that dies sooner than this after starting counts as a failed start.
QUICK_DEATH = 5.0
#: Failed starts in a row after which the supervisor gives up.
MAX_FAILED_STARTS = 5


class Worker:
    """One worker process: started, watched and started again by the supervisor."""

    def __init__(self, index: int, node_id: str, argv: Sequence[str]) -> None:
        self.index = index
        self.node_id = node_id
        self._argv = list(argv)
        self.process: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.started_at = 0.0
        self.failed_starts = 0
        self._ready_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        read_fd, write_fd = os.pipe()
        command = [
            sys.executable,
            "-m",
            "roomcast",
            *self._argv,
            "--id",
            self.node_id,
            "--worker-index",
            str(self.index),
            "--ready-fd",
            str(write_fd),
        ]
        self.ready.clear()
        try:
            self.process = await asyncio.create_subprocess_exec(*command, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        self.started_at = time.monotonic()
        log.info("worker %s started (pid %d)", self.node_id, self.process.pid)
        self._ready_task = asyncio.get_running_loop().create_task(self._wait_ready(read_fd))

    async def _wait_ready(self, read_fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0)
        )
        try:
            if (await reader.readline()).strip() == b"ready":
                self.ready.set()
        finally:
            transport.close()

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)


async def supervise(config: Config, argv: Sequence[str]) -> int:
    """Run ``config.workers`` workers of the ``roomcast`` command ``argv`` until
    SIGTERM/SIGINT; returns the exit status (0 after a graceful stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    workers = [Worker(i, f"{config.id}-{i}", argv) for i in range(1, config.workers + 1)]
    for worker in workers:
        await worker.start()
    status = await _watch(config, workers, stop)
    for worker in workers:
        worker.signal(signal.SIGTERM)
    deadline = config.shutdown_timeout + 10.0
    waits = [w.process.wait() for w in workers if w.process is not None]
    try:
        await asyncio.wait_for(asyncio.gather(*waits), deadline)
    except TimeoutError:
        log.error("workers still running %.0fs after SIGTERM; killing them", deadline)
        for worker in workers:
            worker.signal(signal.SIGKILL)
        await asyncio.gather(*(w.process.wait() for w in workers if w.process is not None))
    log.info("roomcast %s stopped (%d workers)", config.id, len(workers))
    return status


async def _watch(config: Config, workers: list[Worker], stop: asyncio.Event) -> int:
    """Announce readiness, restart dead workers; return when told to stop (0) or when a
    worker cannot start at all (1)."""
    announced = False
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            if not announced and all(w.ready.is_set() for w in workers):
                announced = True
                log.info(
                    "roomcast ready %s workers=%d socket=%s web=%s",
                    config.id,
                    len(workers),
                    config.socket_port or "off",
                    config.web_port or "off",
                )
            exits = {asyncio.ensure_future(w.process.wait()): w for w in workers if w.process}
            ready = [asyncio.ensure_future(w.ready.wait()) for w in workers if not announced]
            done, _ = await asyncio.wait(
                [stopping, *exits, *ready], return_when=asyncio.FIRST_COMPLETED
            )
            for task in [*exits, *ready]:
                if task not in done:
                    task.cancel()
            for task, worker in exits.items():
                if task not in done or stop.is_set():
                    continue
                quick = time.monotonic() - worker.started_at < QUICK_DEATH
                worker.failed_starts = worker.failed_starts + 1 if quick else 0
                if worker.failed_starts >= MAX_FAILED_STARTS:
                    log.error(
                        "worker %s died %d times right after starting; giving up",
                        worker.node_id,
                        worker.failed_starts,
                    )
                    return 1
                log.warning(
                    "worker %s exited with status %s; starting it again",
                    worker.node_id,
                    task.result(),
                )
                if quick:  # back off a little when it keeps dying at once
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5 * 2**worker.failed_starts)
                if not stop.is_set():
                    await worker.start()
        return 0
    finally:
        stopping.cancel()
