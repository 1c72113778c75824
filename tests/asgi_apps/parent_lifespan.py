"""A Starlette application whose own lifespan starts and stops the mounted roomcast node.

uvicorn parent_lifespan:app --app-dir tests/asgi_apps --lifespan on --port 8000
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Mount

import roomcast.asgi
from roomcast import load_config

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

realtime = roomcast.asgi.app(load_config({"socket_port": 0, "web_port": 0}))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await realtime.start()
    yield
    await realtime.stop()


app = Starlette(routes=[Mount("/realtime", app=realtime)], lifespan=lifespan)
