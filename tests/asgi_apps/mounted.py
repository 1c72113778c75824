"""A Starlette application that mounts roomcast at ``/realtime`` and has a route of its own.

It sends roomcast no lifespan (Starlette never does for a mounted app): the node starts
on the first request or connection. Settings come from ``ROOMCAST_*`` variables.

    uvicorn mounted:app --app-dir tests/asgi_apps --port 8000
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import roomcast.asgi
from roomcast import load_config

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

realtime = roomcast.asgi.app(load_config({"socket_port": 0, "web_port": 0}))


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello from the parent app")


app = Starlette(routes=[Route("/hello", hello), Mount("/realtime", app=realtime)])
