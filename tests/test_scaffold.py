"""``roomcast new DIR``: the project it writes passes its own tests and starts as it is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import LOOPBACK, LineClient, free_port, wait_until

FILES = ["README.md", "actions/hello.py", "pyproject.toml", "roomcast.toml", "tests/test_hello.py"]


def roomcast(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    return subprocess.run(
        [sys.executable, "-m", "roomcast", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def new_project(tmp_path: Path) -> Path:
    project = tmp_path / "myapp"
    result = roomcast("new", str(project))
    assert result.returncode == 0, result.stderr
    return project


def test_new_writes_the_settings_an_action_a_middleware_and_a_test(tmp_path: Path) -> None:
    project = new_project(tmp_path)
    written = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    assert written == FILES
    assert "# myapp" in (project / "README.md").read_text()
    assert 'asyncio_mode = "auto"' in (project / "pyproject.toml").read_text()


def test_the_new_project_passes_its_own_tests_from_another_directory(tmp_path: Path) -> None:
    project = new_project(tmp_path)
    # Run from outside the project: its test finds the actions relative to itself.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_the_new_project_starts_with_its_config_and_answers_its_action(tmp_path: Path) -> None:
    project = new_project(tmp_path)
    port = free_port()
    log = tmp_path / "node.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    command = [sys.executable, "-m", "roomcast", "start", "--config", "roomcast.toml"]
    command += ["--bind", LOOPBACK, "--socket-port", str(port), "--web-port", "0"]
    with open(log, "wb") as output:
        node = subprocess.Popen(
            command, cwd=project, stdout=output, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_until(lambda: "roomcast ready" in log.read_text(), 20, message="the node ready")
        client = LineClient(port)
        client.read()  # welcome
        reply = client.request('{"action":"hello","params":{"name":"Ada"}}')
        client.close()
        assert reply == {
            "greeting": "Hello, Ada!",
            "rooms": ["defaultRoom", "lobby"],
            "context": "response",
            "messageCount": 1,
        }
    finally:
        node.terminate()
        assert node.wait(15) == 0


def test_new_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = roomcast("new", str(tmp_path))
    assert (result.returncode, result.stderr) == (
        2,
        f"roomcast: {tmp_path} already exists and is not an empty directory\n",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
