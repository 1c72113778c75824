"""Helpers of the ASGI tests: uvicorn processes serving the apps of ``tests/asgi_apps``.

Every process is stopped by its pid; every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import LOOPBACK, free_port, wait_until

APPS = Path(__file__).parent.parent / "asgi_apps"


@dataclass
class UvicornProcess:
    """``uvicorn <module>:app`` on a free loopback port; ``log`` holds what it printed."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    node_id: str

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit (SIGKILL after ``timeout``); the exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        return int(self.process.returncode)


def start_uvicorn(
    module: str, *, lifespan: str, env: dict[str, str] | None = None, app_dir: Path = APPS
) -> UvicornProcess:
    """Serve ``<app_dir>/<module>.py``'s ``app`` (``tests/asgi_apps`` unless told) and wait
    until uvicorn listens."""
    port = free_port()
    node_id = f"asgi-{module}-{port}"
    log_path = Path(tempfile.mkdtemp(prefix="roomcast-asgi-")) / f"{module}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    full_env.update({"ROOMCAST_ID": node_id, **(env or {})})
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{module}:app",
        "--app-dir",
        str(app_dir),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--lifespan",
        lifespan,
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    server = UvicornProcess(process, port, log_path, node_id)

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"uvicorn {module} exited early:\n{server.log}")
        return "Uvicorn running on" in server.log

    try:
        wait_until(listening, 20, message=f"uvicorn {module} listening")
    except BaseException:
        server.stop()
        raise
    return server


WELCOME = {"welcome": "Hello! Welcome to the roomcast api", "context": "api"}


def unique_room(prefix: str = "room") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class HttpReply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    port: int,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> HttpReply:
    """One HTTP request to the uvicorn process on ``port``."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return HttpReply(response.status, response.read())
    finally:
        connection.close()
