"""roomcast as the top-level ASGI app (and under a parent's lifespan) in a uvicorn process:
the lifespan starts the node before any request and stops it on shutdown."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import aiohttp
from asgi_support import WELCOME, UvicornProcess, http_request, start_uvicorn

from support import LOOPBACK, wait_until


def assert_ready_before_any_request(server: UvicornProcess) -> None:
    wait_until(lambda: "roomcast ready" in server.log, 10, message="roomcast ready")
    assert f"roomcast ready {server.node_id}" in server.log
    assert "HTTP/1.1" not in server.log  # no request was served yet


def assert_stopped_on_sigterm(server: UvicornProcess) -> None:
    # uvicorn shuts down gracefully, then raises the signal it caught again: -SIGTERM.
    assert server.stop() in (0, -signal.SIGTERM)
    log = server.log
    assert "Application shutdown complete" in log
    assert f"roomcast {server.node_id} stopping" in log
    assert f"roomcast {server.node_id} stopped" in log
    assert log.index("roomcast ready") < log.index(f"roomcast {server.node_id} stopped")


def test_the_lifespan_of_the_top_level_app_starts_the_node_before_any_request() -> None:
    server = start_uvicorn("toplevel", lifespan="on")
    try:
        assert_ready_before_any_request(server)
    finally:
        server.stop()


def test_the_lifespan_of_the_top_level_app_stops_the_node_on_sigterm() -> None:
    server = start_uvicorn("toplevel", lifespan="on")
    try:
        wait_until(lambda: "roomcast ready" in server.log, 10, message="roomcast ready")
    finally:
        assert_stopped_on_sigterm(server)


async def test_the_top_level_app_serves_ws_and_api_at_the_root() -> None:
    server = start_uvicorn("toplevel", lifespan="on")
    try:
        assert http_request(server.port, "GET", "/api/status").json()["id"] == server.node_id
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://{LOOPBACK}:{server.port}/ws") as ws,
        ):
            assert json.loads(await ws.receive_str(timeout=5)) == WELCOME
            await ws.send_str(json.dumps({"event": "roomAdd", "room": "defaultRoom"}))
            assert json.loads(await ws.receive_str(timeout=5))["data"] is True
    finally:
        server.stop()


async def test_open_clients_are_closed_when_uvicorn_shuts_down() -> None:
    server = start_uvicorn("toplevel", lifespan="on")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://{LOOPBACK}:{server.port}/ws") as ws,
        ):
            assert json.loads(await ws.receive_str(timeout=5)) == WELCOME
            server.process.terminate()
            closing = await ws.receive(timeout=10)
            assert closing.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code in (1001, 1012)  # roomcast's going away, or uvicorn's restart
    finally:
        assert_stopped_on_sigterm(server)


def test_a_bad_setting_fails_the_lifespan_startup(tmp_path: Path) -> None:
    config = tmp_path / "roomcast.toml"
    config.write_text('[auth]\njwt_public_key = "/nonexistent/public.pem"\n')
    try:
        server = start_uvicorn("toplevel", lifespan="on", env={"ROOMCAST_CONFIG": str(config)})
    except AssertionError as error:  # uvicorn exits before it listens
        assert "[auth] jwt_public_key" in str(error)
    else:
        server.stop()
        raise AssertionError("uvicorn started with an unreadable key file")


def test_a_parent_lifespan_starts_and_stops_the_mounted_node() -> None:
    server = start_uvicorn("parent_lifespan", lifespan="on")
    try:
        assert_ready_before_any_request(server)
        reply = http_request(server.port, "GET", "/realtime/api/status")
        assert reply.json()["id"] == server.node_id
        assert server.log.count("roomcast ready") == 1
    finally:
        assert_stopped_on_sigterm(server)
