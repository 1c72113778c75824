"""Operations commands: look at a running cluster through its Redis.

``roomcast rooms``, ``roomcast room NAME``, ``roomcast nodes`` read what the nodes store;
``roomcast say ROOM MESSAGE`` broadcasts through the emitter. They run no node; with
``--config`` they read the nodes' settings file (Redis, token, key prefix and, for ``say``,
the rooms with history), which their flags and ``ROOMCAST_*`` variables override.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

import orjson

from roomcast.api import describe_store
from roomcast.cluster.connect import connect_cluster
from roomcast.cluster.errors import REDIS_DOWN
from roomcast.cluster.keys import Keys
from roomcast.cluster.store import Store, connect
from roomcast.config import Config, ConfigError, load_config

Command = Callable[[Store, argparse.Namespace], Coroutine[Any, Any, Any]]


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``rooms``, ``room``, ``nodes`` and ``say`` to the ``roomcast`` subcommands."""
    rooms = commands.add_parser("rooms", parents=[common], help="rooms and their member counts")
    rooms.set_defaults(operation=list_rooms)
    room = commands.add_parser("room", parents=[common], help="one room's members")
    room.add_argument("name", help="the room")
    room.set_defaults(operation=show_room)
    nodes = commands.add_parser("nodes", parents=[common], help="live nodes")
    nodes.set_defaults(operation=list_nodes)
    say = commands.add_parser("say", parents=[common], help="broadcast to a room (from 0)")
    say.add_argument("room", help="the room")
    say.add_argument("message", help="the message (a string)")
    say.set_defaults(operation=say_in_room)


def common_options() -> argparse.ArgumentParser:
    """The options every operations command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        help="the nodes' TOML settings file (also ROOMCAST_CONFIG): Redis, token, key prefix "
        "and the rooms with history",
    )
    common.add_argument(
        "--redis-url", help="the cluster's key-store Redis (env ROOMCAST_REDIS_URL)"
    )
    common.add_argument(
        "--key-prefix", help="key prefix (default: [cluster] key_prefix of --config, roomcast:)"
    )
    common.add_argument("--server-token", help="the cluster's secret (env ROOMCAST_SERVER_TOKEN)")
    common.add_argument(
        "--redis-cluster",
        action="store_true",
        help="--redis-url is a Redis Cluster seed (env ROOMCAST_REDIS_CLUSTER=1)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    return common


async def run(args: argparse.Namespace, env: dict[str, str], out: TextIO = sys.stdout) -> int:
    """Run the operations command in ``args``; 0, or 1 with the reason on stderr."""
    try:
        config = settings(args, env)
    except (ConfigError, OSError, ValueError) as error:
        print(f"roomcast: {error}", file=sys.stderr)
        return 2
    url = config.redis_url
    if not url:
        print("roomcast: --redis-url is required (the cluster's Redis)", file=sys.stderr)
        return 2
    args.settings = config
    sharded = config.redis_cluster
    client = connect_cluster(url) if sharded else connect(url)
    store = Store(client, Keys(config.cluster.key_prefix, cluster=sharded))
    try:
        result = await args.operation(store, args)
    except REDIS_DOWN as error:
        print(f"roomcast: Redis unreachable at {describe_store(url)}: {error}", file=sys.stderr)
        return 1
    except LookupError as error:
        print(f"roomcast: {error.args[0]}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    rows, headers = result
    if args.json:
        out.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(_table(headers, [[row[h] for h in headers] for row in rows]))
    return 0


def settings(args: argparse.Namespace, env: dict[str, str]) -> Config:
    """The nodes' settings as the command sees them: its flags, then ``ROOMCAST_*``, then
    the ``--config`` file, then the defaults."""
    flags = {
        "redis_url": args.redis_url,
        "server_token": args.server_token,
        "redis_cluster": True if args.redis_cluster else None,
    }
    config = load_config(flags, env, config_file=args.config)
    if args.key_prefix is not None:
        config.cluster.key_prefix = args.key_prefix
    return config


async def list_rooms(store: Store, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    rooms = await store.list_rooms()
    sizes = await store.room_sizes(rooms)
    return [{"room": r, "members": sizes[r]} for r in rooms], ["room", "members"]


async def show_room(store: Store, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    if not await store.room_exists(args.name):
        raise LookupError(f"room does not exist ({args.name})")
    members = await store.room_members(args.name)
    rows = [
        {
            "id": member,
            "node": details.get("host"),
            "joinedAt": _time(details.get("joinedAt")),
        }
        for member, details in sorted(members.items())
    ]
    return rows, ["id", "node", "joinedAt"]


async def list_nodes(store: Store, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    beats = await store.last_heartbeats()
    rows = []
    for node, beat in beats.items():
        members = len(await store.node_memberships(node))
        rows.append({"node": node, "members": members, "lastHeartbeat": _time(beat)})
    return rows, ["node", "members", "lastHeartbeat"]


async def say_in_room(store: Store, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    from roomcast.emitter import Emitter

    emitter = Emitter.from_config(args.settings)  # a room with history keeps it
    try:
        if not await store.room_exists(args.room):
            raise LookupError(f"room does not exist ({args.room})")
        await emitter.broadcast(args.room, args.message)
    finally:
        await emitter.close()
    return [{"room": args.room, "said": args.message}], ["room", "said"]


def _time(ms: Any) -> str | None:
    if not isinstance(ms, int | float) or not ms:
        return None
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.isoformat(timespec="milliseconds")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [
        [h.upper() for h in headers],
        *[["" if v is None else str(v) for v in r] for r in rows],
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in cells
    )
