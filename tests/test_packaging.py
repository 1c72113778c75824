"""The distribution: ``python -m build`` gives an sdist and a wheel (built from that sdist),
and the wheel alone, in a fresh virtualenv, runs ``roomcast --version`` and a node.

Slow (a build and an install, dependencies from pip's cache): about a minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
import urllib.request
import venv
from pathlib import Path

import pytest

from support import LOOPBACK, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROOMCAST_", "COVERAGE_", "VIRTUAL_ENV", "PYTHON"))
    }


@pytest.mark.timeout(400)
def test_the_built_wheel_installs_in_a_fresh_venv_and_starts_a_node(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert (dist / f"roomcast-{VERSION}.tar.gz").is_file()
    wheel = dist / f"roomcast-{VERSION}-py3-none-any.whl"
    assert wheel.is_file()

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    installed = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=240,
        env=clean_env(),
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]

    version = subprocess.run(
        [str(bin_dir / "roomcast"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert version.stdout == f"roomcast {VERSION}\n"

    # The scaffold's templates came with the wheel.
    scaffolded = subprocess.run(
        [str(bin_dir / "roomcast"), "new", str(tmp_path / "project")],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert scaffolded.returncode == 0, scaffolded.stderr
    assert (tmp_path / "project" / "actions" / "hello.py").is_file()

    log = tmp_path / "node.log"
    web_port = free_port()
    command = [str(bin_dir / "roomcast"), "start", "--bind", LOOPBACK]
    command += ["--socket-port", str(free_port()), "--web-port", str(web_port)]
    with open(log, "wb") as output:
        node = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=clean_env(), cwd=tmp_path
        )
    try:
        wait_until(lambda: "roomcast ready" in log.read_text(), 30, message="the node ready")
        # The static files came with the wheel: the chat page and the browser client.
        for path in ("chat.html", "roomcast.js"):
            url = f"http://{LOOPBACK}:{web_port}/{path}"
            with urllib.request.urlopen(url, timeout=5) as reply:
                assert reply.status == 200
    finally:
        node.send_signal(signal.SIGTERM)
        assert node.wait(15) == 0
