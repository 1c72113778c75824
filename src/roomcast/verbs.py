"""The verbs a persistent connection may use, shared by the TCP and WebSocket servers.

Transports parse their wire format into a verb name and an argument dict, call
:func:`run_verb`, and encode what it returns (or the error it raises) as a reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
        return await api.chat_room.add_member(connection.id, _text(room))
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


def _text(value: Any) -> str:
    return "" if value is None else str(value)
