"""Fixtures of the ASGI tests: uvicorn processes serving the apps of ``tests/asgi_apps``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asgi_support import UvicornProcess, start_uvicorn


@pytest.fixture(scope="module")
def mounted() -> Iterator[UvicornProcess]:
    """The Starlette app mounting roomcast at ``/realtime`` (no lifespan for roomcast)."""
    server = start_uvicorn("mounted", lifespan="off")
    yield server
    server.stop()
