"""The verbs a persistent connection may use, shared by the TCP and WebSocket servers.

Transports parse their wire format into a verb name and an argument dict, call
:func:`run_verb`, and encode what it returns (or the error it raises) as a reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from roomcast.chat.history import DEFAULT_LIMIT, MAX_LIMIT
from roomcast.limits import params_error, too_many_params
from roomcast.protocol.requests import VERBS

if TYPE_CHECKING:
    from roomcast.connection import Connection

__all__ = ["VERBS", "VerbError", "run_verb"]


class VerbError(Exception):
    """A verb refused; the message is the reply's ``status``."""


async def run_verb(connection: Connection, verb: str, args: Mapping[str, Any]) -> Any:
    """Run ``verb`` for ``connection``; return the reply data or raise with the wire text."""
    api = connection.api
    if api.auth.required:  # first of all checks: no join or say without a valid token
        api.auth.check_request(connection, verb)
    room = args.get("room")
    if verb == "roomAdd":
        if "since" in args or "epoch" in args:
            since, epoch = recovery_position(args.get("since"), args.get("epoch"))
            return await api.chat_room.recover_member(connection, _text(room), since, epoch)
        return await api.chat_room.add_member(connection.id, _text(room))
    if verb == "roomHistory":
        if room not in connection.rooms:
            raise VerbError(f"not member of room {room}")
        since = whole_number("since", args.get("since", 0))
        limit = history_limit(args.get("limit"))
        return await api.chat_room.room_history(connection, _text(room), since, limit)
    if verb == "roomLeave":
        return await api.chat_room.remove_member(connection.id, _text(room))
    if verb == "say":
        await api.chat_room.broadcast(connection, _text(room), args.get("message"))
        return None
    if verb == "roomView":
        if room not in connection.rooms:
            raise VerbError(f"not member of room {room}")
        return await api.chat_room.room_status(_text(room))
    if verb == "detailsView":
        return connection.details()
    if verb == "documentation":
        return api.actions.documentation()
    if verb == "paramsView":
        return connection.params
    if verb == "paramsDelete":
        connection.params.clear()
        return None
    key = args.get("key")
    if verb in ("paramAdd", "paramView", "paramDelete") and not key:
        raise VerbError("a param key is required")
    if verb == "paramAdd":
        _add_param(connection, str(key), args.get("value"))
        return None
    if verb == "paramView":
        return connection.params.get(str(key))
    if verb == "paramDelete":
        connection.params.pop(str(key), None)
        return None
    raise VerbError(f"unknown verb ({verb})")


def _add_param(connection: Connection, key: str, value: Any) -> None:
    """Store a sticky param, within ``max_params`` and ``max_param_length``."""
    limits = connection.api.config.limits
    params = connection.params
    if limits.max_params and key not in params and len(params) >= limits.max_params:
        raise VerbError(too_many_params(limits.max_params))
    error = params_error({key: value}, 0, limits.max_param_length)
    if error is not None:
        raise VerbError(error)
    params[key] = value


def whole_number(name: str, value: Any) -> int:
    """``value`` (an int, or its digits as text) as an int >= 0; VerbError otherwise."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise VerbError(f"{name} must be a whole number (0 or more)")


def history_limit(value: Any) -> int:
    """How many messages ``roomHistory`` returns: ``value`` (default 100), at most 1000."""
    if value is None:
        return DEFAULT_LIMIT
    limit = whole_number("limit", value)
    if limit < 1:
        raise VerbError("limit must be a whole number (1 or more)")
    return min(limit, MAX_LIMIT)


def recovery_position(since: Any, epoch: Any) -> tuple[int, str]:
    """The ``(since, epoch)`` a recovering ``roomAdd`` gives; VerbError when either is
    missing or malformed (an epoch is a non-empty string without spaces)."""
    if since is None or epoch is None:
        raise VerbError("recovering a room needs both since and epoch")
    if not isinstance(epoch, str) or not epoch or any(c.isspace() for c in epoch):
        raise VerbError("epoch must be a non-empty string without spaces")
    return whole_number("since", since), epoch


def _text(value: Any) -> str:
    return "" if value is None else str(value)
