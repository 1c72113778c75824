"""Presence events: members of a room are told when a connection joins or leaves it.

With ``[chat] presence_events = true`` the chat room sends these on the room's channel,
like chat messages (so every node's members get them through the subscription they
already have); they are never kept in history. Off, nothing here runs.
"""

from __future__ import annotations

from typing import Any


def join_event(room: str, connection_id: str, details: dict[str, Any], at: int) -> dict[str, Any]:
    """What members receive when ``connection_id`` joins ``room``; ``details`` is its
    ``room_status`` entry."""
    return {
        "context": "presence",
        "event": "join",
        "room": room,
        "id": connection_id,
        "details": details,
        "at": at,
    }


def leave_event(room: str, connection_id: str, at: int) -> dict[str, Any]:
    """What members receive when ``connection_id`` leaves ``room``, however it left."""
    return {"context": "presence", "event": "leave", "room": room, "id": connection_id, "at": at}


def is_event(payload: Any) -> bool:
    """True for a presence event (delivered as it is: no ``say`` middleware runs on it)."""
    return isinstance(payload, dict) and payload.get("context") == "presence"
