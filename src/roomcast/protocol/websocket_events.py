"""The WebSocket event protocol without sockets: one JSON text frame in, one request out."""

from __future__ import annotations

from typing import Any

from roomcast import jsonwire
from roomcast.protocol.requests import (
    ActionRequest,
    FileRequest,
    InvalidRequest,
    QuitRequest,
    Request,
    VerbRequest,
)

_ROOM_EVENTS = ("roomAdd", "roomLeave", "roomView", "roomHistory")
_EXTRA_KEYS = {"roomAdd": ("since", "epoch"), "roomHistory": ("since", "limit")}
#: The reply to an ``action`` event that names no action: it shows the shape to send.
ACTION_REQUIRED = 'action is required: send {"event":"action","params":{"action":"<name>",…}}'


def parse_event(text: str | bytes) -> tuple[Request, Any]:
    """Return the request in a frame and its ``messageId`` (None when absent)."""
    try:
        value = jsonwire.loads(text)
    except ValueError:
        return InvalidRequest("invalid JSON: a frame must be a JSON object"), None
    if not isinstance(value, dict):
        return InvalidRequest("a frame must be a JSON object"), None
    message_id = value.get("messageId")
    event = value.get("event")
    if event in _ROOM_EVENTS:
        args = {"room": value.get("room")}
        # roomAdd may recover (since + epoch); roomHistory reads (since, limit)
        extra = _EXTRA_KEYS.get(event, ())
        args.update((key, value[key]) for key in extra if value.get(key) is not None)
        return VerbRequest(event, args), message_id
    if event == "say":
        return VerbRequest(
            "say", {"room": value.get("room"), "message": value.get("message")}
        ), message_id
    if event in ("detailsView", "documentation"):
        return VerbRequest(event, {}), message_id
    if event == "action":
        params = value.get("params") or {}
        if not isinstance(params, dict):
            return InvalidRequest("params must be a JSON object"), message_id
        action = params.get("action")
        if not isinstance(action, str) or not action:
            return InvalidRequest(ACTION_REQUIRED), message_id
        return ActionRequest(action, dict(params)), message_id
    if event == "file":
        return FileRequest(str(value.get("file") or "")), message_id
    if event == "quit":
        return QuitRequest(), message_id
    return InvalidRequest(f"unknown event ({event})"), message_id
