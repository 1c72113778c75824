"""Reply shapes shared by the socket and WebSocket wires (key order as ActionHero sends it)."""

from __future__ import annotations

from typing import Any

GOODBYE: dict[str, Any] = {"status": "Bye!", "context": "api"}
#: Why a connection the node cannot take now is refused (the TCP line, a 503's body).
BUSY = "server is busy"


def refused(reason: str) -> dict[str, Any]:
    """What a client refused at connect time is told before it is closed."""
    return {"status": "error", "error": reason, "context": "api"}


def welcome(text: str) -> dict[str, Any]:
    return {"welcome": text, "context": "api"}


def verb_ok(data: Any, message_count: int, message_id: Any = None) -> dict[str, Any]:
    reply = {"status": "OK", "context": "response", "data": data, "messageCount": message_count}
    if message_id is not None:
        reply["messageId"] = message_id
    return reply


def verb_failed(error: str, message_count: int, message_id: Any = None) -> dict[str, Any]:
    reply = {"status": error, "context": "response", "data": False, "messageCount": message_count}
    if message_id is not None:
        reply["messageId"] = message_id
    return reply


def action_reply(
    response: dict[str, Any], message_count: int, message_id: Any = None
) -> dict[str, Any]:
    reply = dict(response)
    reply["context"] = "response"
    reply["messageCount"] = message_count
    if message_id is not None:
        reply["messageId"] = message_id
    return reply


def request_error(error: str, message_count: int, message_id: Any = None) -> dict[str, Any]:
    """The reply to input we could not parse or accept (too long, bad JSON, bad UTF-8)."""
    reply = {
        "status": "error",
        "error": error,
        "context": "response",
        "messageCount": message_count,
    }
    if message_id is not None:
        reply["messageId"] = message_id
    return reply


def too_long_error(received: int, limit: int) -> str:
    return f"data length is too big ({received} received/{limit} max)"


def file_not_found(path: str) -> str:
    return f"That file is not found ({path})"
