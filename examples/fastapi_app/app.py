"""A FastAPI application that mounts roomcast and broadcasts to a room from a view.

    pip install roomcast fastapi uvicorn
    ROOMCAST_REDIS_URL=redis://127.0.0.1:6379/0 ROOMCAST_SERVER_TOKEN="a long shared secret" \
        uvicorn app:app --app-dir examples/fastapi_app --port 8000

- ``ws://127.0.0.1:8000/realtime/ws``: roomcast's WebSocket protocol, served by uvicorn;
  ``/realtime/api/<action>``: its actions over HTTP;
- ``telnet 127.0.0.1 5000``: the same node's TCP socket (``ROOMCAST_SOCKET_PORT``);
- ``POST /announce`` ``{"room": "announcements", "message": …}``: the view broadcasts the
  message with :class:`roomcast.emitter.Emitter` to every member of the room, on this node
  and on every other node of the cluster, as a chat message from ``0``.

The emitter publishes through Redis, so the node runs on Redis too: settings come from the
``ROOMCAST_*`` variables and ``ROOMCAST_CONFIG`` (``ROOMCAST_REDIS_URL`` is required), and
the emitter is built from the same settings (:meth:`Emitter.from_config`: Redis URL, server
token, key prefix, the rooms with history), so the two cannot disagree.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

import roomcast.asgi
from roomcast import load_config
from roomcast.emitter import Emitter

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

#: The room this app creates at start; any existing room can be announced to.
ANNOUNCEMENTS = "announcements"

# web_port = 0: uvicorn carries the WebSocket and HTTP traffic. The TCP socket stays on
# (port 5000 unless ROOMCAST_SOCKET_PORT says otherwise).
config = load_config({"web_port": 0})
if config.redis_url is None:
    raise RuntimeError(
        "set ROOMCAST_REDIS_URL (e.g. redis://127.0.0.1:6379/0): "
        "the emitter broadcasts through Redis"
    )
realtime = roomcast.asgi.app(config)
# The node's own settings: its Redis, token, key prefix and the rooms that keep history (a
# broadcast to one of those is kept, with its offset, like a member's say).
emitter = Emitter.from_config(config)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # A mounted app gets no lifespan of its own: start the node with the parent's.
    api = await realtime.start()
    await api.chat_room.add(ANNOUNCEMENTS)
    yield
    await realtime.stop()
    await emitter.close()


app = FastAPI(lifespan=lifespan)
app.mount("/realtime", realtime)  # ws://HOST/realtime/ws, /realtime/api/<action>


class Announcement(BaseModel):
    room: str = Field(default=ANNOUNCEMENTS, min_length=1)
    message: Any = Field(description="any JSON value but null and the empty string")


@app.post("/announce")
async def announce(announcement: Announcement) -> dict[str, Any]:
    """Broadcast ``message`` to every member of ``room``; answer how many members it has."""
    room, message = announcement.room, announcement.message
    if message is None or message == "":
        raise HTTPException(422, "a message is required")
    size = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())
    limit = config.limits.max_message_length
    if limit and size > limit:  # what a node would refuse from a client's say
        raise HTTPException(413, f"message is too long ({size} > {limit} bytes)")
    try:
        status = await emitter.room_status(room)
    except LookupError as error:
        raise HTTPException(404, str(error)) from None
    await emitter.broadcast(room, message)
    return {"room": room, "membersCount": status["membersCount"]}
