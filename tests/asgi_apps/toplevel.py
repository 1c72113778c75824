"""roomcast as the top-level ASGI application: the ASGI lifespan starts and stops the node.

uvicorn toplevel:app --app-dir tests/asgi_apps --lifespan on --port 8000
"""

from __future__ import annotations

import logging

import roomcast.asgi
from roomcast import load_config

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

app = roomcast.asgi.app(load_config({"socket_port": 0, "web_port": 0}))
