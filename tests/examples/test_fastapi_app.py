"""examples/fastapi_app under a real uvicorn: roomcast mounted at ``/realtime``, and a view
that broadcasts to a room with the emitter, through a redis-server of the test's own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets
from asgi_support import WELCOME, UvicornProcess, http_request, start_uvicorn

from support import (
    LOOPBACK,
    LineClient,
    NodeProcess,
    RedisProcess,
    free_port,
    redis_server_path,
    start_node,
    start_redis,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app"
TOKEN = "the fastapi example's shared secret"
ROOM = "announcements"
KEPT = "kept-news"  # a room with history (the only one)


@dataclass
class FastApiApp:
    server: UvicornProcess
    socket_port: int  # the mounted node's own TCP socket

    def announce(self, body: dict[str, Any]) -> tuple[int, Any]:
        reply = http_request(
            self.server.port,
            "POST",
            "/announce",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        return reply.status, reply.json()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed; the emitter needs Redis")
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def settings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cluster's TOML file: rooms named ``kept-*`` keep history."""
    path = tmp_path_factory.mktemp("fastapi") / "roomcast.toml"
    path.write_text(f'[chat]\nhistory_size = 10\nhistory_rooms = ["{KEPT}"]\n')
    return path


@pytest.fixture(scope="module")
def fastapi_app(redis: RedisProcess, settings_file: Path) -> Iterator[FastApiApp]:
    socket_port = free_port()
    server = start_uvicorn(
        "app",
        lifespan="on",
        app_dir=EXAMPLE,
        env={
            "ROOMCAST_REDIS_URL": redis.url,
            "ROOMCAST_SERVER_TOKEN": TOKEN,
            "ROOMCAST_BIND": LOOPBACK,
            "ROOMCAST_SOCKET_PORT": str(socket_port),
            "ROOMCAST_CONFIG": str(settings_file),
        },
    )
    yield FastApiApp(server, socket_port)
    server.stop()


@pytest.fixture(scope="module")
def other_node(
    redis: RedisProcess, fastapi_app: FastApiApp, settings_file: Path
) -> Iterator[NodeProcess]:
    """A ``roomcast start`` node of the same cluster, outside the FastAPI process."""
    node = start_node(
        "--redis-url", redis.url, "--server-token", TOKEN, "--config", str(settings_file)
    )
    yield node
    node.stop()


def tcp_member(port: int, room: str) -> LineClient:
    client = LineClient(port)
    client.read()  # the welcome
    assert client.request(f"roomAdd {room}")["data"] is True
    return client


def chat_message(client: LineClient) -> Any:
    return client.read_until(lambda m: isinstance(m, dict) and m.get("context") == "user")


def without_time(message: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(message.pop("sentAt"), int)
    return message


async def test_an_announcement_reaches_the_rooms_members_over_the_mounted_ws_and_tcp(
    fastapi_app: FastApiApp, other_node: NodeProcess
) -> None:
    url = f"ws://{LOOPBACK}:{fastapi_app.server.port}/realtime/ws"
    async with websockets.connect(url, open_timeout=5) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == WELCOME
        await ws.send(json.dumps({"event": "roomAdd", "room": ROOM}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["data"] is True
        same_node = tcp_member(fastapi_app.socket_port, ROOM)
        elsewhere = tcp_member(other_node.socket_port, ROOM)
        try:
            message = {"text": "deploy finished", "version": 42}
            assert fastapi_app.announce({"message": message}) == (
                200,
                {"room": ROOM, "membersCount": 3},
            )
            expected = {"message": message, "room": ROOM, "from": 0, "context": "user"}
            assert without_time(json.loads(await asyncio.wait_for(ws.recv(), 5))) == expected
            assert without_time(chat_message(same_node)) == expected
            assert without_time(chat_message(elsewhere)) == expected
        finally:
            same_node.close()
            elsewhere.close()


def test_an_announcement_to_a_room_with_history_is_kept_with_the_next_offset(
    fastapi_app: FastApiApp, other_node: NodeProcess
) -> None:
    creator = LineClient(other_node.socket_port)
    try:
        creator.read()  # the welcome
        create = json.dumps({"action": "createChatRoom", "params": {"name": KEPT}})
        assert "error" not in creator.request(create)
    finally:
        creator.close()
    same_node = tcp_member(fastapi_app.socket_port, KEPT)
    elsewhere = tcp_member(other_node.socket_port, KEPT)
    try:
        assert fastapi_app.announce({"room": KEPT, "message": "kept"}) == (
            200,
            {"room": KEPT, "membersCount": 2},
        )
        received = [chat_message(same_node), chat_message(elsewhere)]
        assert [(m["message"], m["from"], m["offset"]) for m in received] == [("kept", 0, 1)] * 2
        assert received[0]["epoch"] == received[1]["epoch"]
        history = elsewhere.request(f"roomHistory {KEPT}")["data"]
        assert [(m["message"], m["offset"]) for m in history["messages"]] == [("kept", 1)]
    finally:
        same_node.close()
        elsewhere.close()


def test_an_announcement_to_a_room_that_does_not_exist_is_404(fastapi_app: FastApiApp) -> None:
    assert fastapi_app.announce({"room": "nowhere", "message": "hi"}) == (
        404,
        {"detail": "room does not exist (nowhere)"},
    )


@pytest.mark.parametrize("message", [None, ""])
def test_an_announcement_with_an_empty_message_is_422(
    fastapi_app: FastApiApp, message: Any
) -> None:
    assert fastapi_app.announce({"message": message}) == (
        422,
        {"detail": "a message is required"},
    )


def test_an_announcement_without_a_message_field_is_422(fastapi_app: FastApiApp) -> None:
    status, body = fastapi_app.announce({"room": ROOM})
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "message"]


def test_an_announcement_over_the_message_limit_is_413(fastapi_app: FastApiApp) -> None:
    text = "x" * 65536  # with its quotes 65538 bytes once JSON-encoded
    assert fastapi_app.announce({"message": text}) == (
        413,
        {"detail": "message is too long (65538 > 65536 bytes)"},
    )


def test_the_app_will_not_start_without_a_redis_url() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    result = subprocess.run(
        [sys.executable, "-c", "import app"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "RuntimeError: set ROOMCAST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)" in result.stderr
