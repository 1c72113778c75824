"""roomcast's ASGI application (``roomcast.asgi.app``) under uvicorn: the roomcast-asgi target.

The node's own listeners are off (``socket_port = 0``, ``web_port = 0``); clients reach
``/ws`` through uvicorn, whose lifespan starts and stops the node. uvicorn runs as the
python-socketio peer does: uvloop, ``ws="auto"``, no permessage-deflate, warnings only.

Usage: python peers/roomcast_asgi_server.py --port 8080 [--redis-url redis://...]
       [--send-limit BYTES] [--id NAME]
"""

from __future__ import annotations

import argparse

import uvicorn

import roomcast.asgi
from roomcast.config import Config, WebSettings

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--send-limit", type=int, default=None)
    parser.add_argument("--id", default="bench-asgi")
    ns = parser.parse_args()
    web = WebSettings()
    if ns.send_limit:
        web.send_buffer_limit = ns.send_limit
    config = Config(
        id=ns.id,
        socket_port=0,
        web_port=0,
        redis_url=ns.redis_url,
        log_level="warning",
        web=web,
    )
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    uvicorn.run(
        roomcast.asgi.app(config),
        host=ns.bind,
        port=ns.port,
        loop=loop,
        ws="auto",
        log_level="warning",
        lifespan="on",
        ws_per_message_deflate=False,
    )
