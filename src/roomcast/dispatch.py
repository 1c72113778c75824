"""Answering a parsed request: the one place verbs and actions meet the transports."""

from __future__ import annotations

import logging
import mimetypes
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roomcast.actions.errors import ActionError
from roomcast.chat.errors import ChatError
from roomcast.limits import TOO_FAST, params_error
from roomcast.protocol import replies
from roomcast.protocol.requests import ActionRequest, InvalidRequest, Request, VerbRequest
from roomcast.verbs import VerbError, run_verb

if TYPE_CHECKING:
    from roomcast.api import Api
    from roomcast.connection import Connection

log = logging.getLogger("roomcast.dispatch")


async def answer(
    connection: Connection, request: Request, message_count: int, message_id: Any = None
) -> dict[str, Any]:
    """Run a verb, action or invalid request and return the reply to send.

    This is where ``say_rate`` and ``action_rate`` apply (to persistent connections: HTTP
    calls actions without coming here): a request over the rate is answered with
    ``you are sending too fast``, never dropped.
    """
    if isinstance(request, VerbRequest):
        if request.verb == "say" and not connection.may_say(
            connection.api.config.limits.say_rate, time.monotonic()
        ):
            connection.api.stats.rate_limited += 1
            return replies.verb_failed(TOO_FAST, message_count, message_id)
        try:
            data = await run_verb(connection, request.verb, request.args)
        except (ChatError, VerbError, ActionError) as error:
            log.debug("%s refused for %s: %s", request.verb, connection.id, error)
            return replies.verb_failed(str(error), message_count, message_id)
        except Exception as error:  # a middleware refusal: the client is told, not the admin
            log.debug("%s refused for %s: %r", request.verb, connection.id, error)
            return replies.verb_failed(
                str(error) or type(error).__name__, message_count, message_id
            )
        return replies.verb_ok(data, message_count, message_id)
    if isinstance(request, ActionRequest):
        limits = connection.api.config.limits
        if not connection.may_run_action(limits.action_rate, time.monotonic()):
            connection.api.stats.rate_limited += 1
            return replies.action_reply({"error": TOO_FAST}, message_count, message_id)
        if request.params is None:
            params = dict(connection.params)
        else:
            params = request.params
            refusal = params_error(params, limits.max_params, limits.max_param_length)
            if refusal is not None:
                return replies.action_reply({"error": refusal}, message_count, message_id)
        response = await connection.api.actions.run(connection, request.action, params)
        return replies.action_reply(response, message_count, message_id)
    if isinstance(request, InvalidRequest):
        return replies.request_error(request.error, message_count, message_id)
    raise TypeError(f"not answerable here: {request!r}")


class PublicFileNotFound(Exception):
    pass


def resolve_public_file(roots: list[Path], requested: str) -> Path:
    """Find ``requested`` inside one of ``roots``; nothing outside them is ever returned.

    Absolute paths, ``..`` segments and symlinks leading out of a root are refused.
    """
    relative = requested.lstrip("/") or "index.html"
    parts = Path(relative).parts
    if any(part in ("..", "") or "\x00" in part for part in parts):
        raise PublicFileNotFound(requested)
    for root in roots:
        base = root.resolve()
        candidate = (base / relative).resolve()
        if candidate.is_relative_to(base) and candidate.is_file():
            return candidate
    raise PublicFileNotFound(requested)


def read_public_file(api: Api, requested: str) -> tuple[bytes, str]:
    """Return a public file's bytes and MIME type, or raise ``PublicFileNotFound``."""
    path = resolve_public_file(api.public_roots, requested)
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        return path.read_bytes(), mime
    except OSError as error:
        raise PublicFileNotFound(requested) from error
