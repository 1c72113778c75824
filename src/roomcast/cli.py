"""The ``roomcast`` command: ``roomcast start`` runs a node until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from roomcast import __version__, logs, ops
from roomcast.api import Api
from roomcast.config import (
    ConfigError,
    closest_environment_variable,
    load_config,
    settings_reference,
    unknown_environment_variables,
)
from roomcast.workers import supervise

log = logging.getLogger("roomcast")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomcast", description="Real-time chat rooms over TCP and WebSocket."
    )
    parser.add_argument("--version", action="version", version=f"roomcast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    start = commands.add_parser("start", help="run a node in the foreground")
    start.add_argument("--config", help="TOML settings file (also ROOMCAST_CONFIG)")
    # The flags' help comes from the settings' own descriptions, so it cannot drift.
    for info in settings_reference():
        if info.flag is None:
            continue
        shown = "" if info.default in (None, []) else f" (default {info.default})"
        options: dict[str, Any] = {"help": f"{info.help}{shown}; env {info.env}"}
        if isinstance(info.default, list):
            options["action"] = "append"
        elif isinstance(info.default, bool):  # a switch; absent leaves env and file alone
            options["action"] = "store_const"
            options["const"] = True
        elif isinstance(info.default, int):
            options["type"] = int
        start.add_argument(info.flag, **options)
    ops.add_commands(commands, ops.common_options())
    new = commands.add_parser("new", help="create a project: settings, an action, a test")
    new.add_argument("directory", help="where to create it (must be new or empty)")
    # Set by the ``--workers`` supervisor for its workers only.
    start.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    start.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    return parser


async def run_node(api: Api, ready_fd: int | None = None) -> None:
    """Start ``api``, wait for SIGINT/SIGTERM, stop it gracefully.

    ``ready_fd`` (a worker's pipe to its supervisor) gets ``ready`` once the node is up.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await api.start()
    if ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
    _tune_garbage_collector()
    try:
        await stop.wait()
    finally:
        await api.stop()


def _tune_garbage_collector() -> None:
    """Keep full garbage collections rare and short on a long-running node.

    Connections are long-lived objects; scanning all of them in a full collection shows
    up as 40-60 ms latency spikes with thousands of clients. What exists at start is
    frozen out of collection, and the young generation collects less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _event_loop_runner() -> Any:
    """uvloop's runner when installed (faster I/O), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _raise_open_file_limit() -> None:
    """Raise the open-file soft limit to the hard limit, so a node can hold as many
    connections as the system lets it; when that is not possible, keep the current one."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as error:
        log.debug("open-file limit left as it is: %s", error)
        return
    log.debug("open-file limit %s (was %s)", hard, soft)


def _warn_about_unknown_environment() -> None:
    for name in unknown_environment_variables(os.environ):
        closest = closest_environment_variable(name)
        hint = f" (did you mean {closest}?)" if closest else ""
        log.warning("unknown environment variable %s is ignored%s", name, hint)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "operation", None) is not None:
        return int(asyncio.run(ops.run(args, dict(os.environ))))
    if args.command == "new":
        from roomcast import scaffold

        return scaffold.main(args.directory)
    if args.command != "start":
        parser.print_help()
        return 2
    # Until the settings say how (text or JSON), log as text.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    runner = _event_loop_runner()
    internal = ("command", "config", "worker_index", "ready_fd")
    flags = {k: v for k, v in vars(args).items() if k not in internal}
    try:
        config = load_config(flags, config_file=args.config)
    except (ConfigError, OSError, ValueError) as error:
        print(f"roomcast: {error}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format, config.id)
    _warn_about_unknown_environment()
    _raise_open_file_limit()
    if config.workers > 1 and args.worker_index is None:
        start_argv = list(sys.argv[1:] if argv is None else argv)
        return int(runner(supervise(config, start_argv)))
    try:
        runner(run_node(Api(config), args.ready_fd))
    except OSError as error:
        log.error("could not start: %s", error)
        return 1
    return 0
