"""roomcast mounted at ``/realtime`` in a Starlette app under a real uvicorn process."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from asgi_support import WELCOME, UvicornProcess, http_request, start_uvicorn, unique_room

from support import LOOPBACK
from tokens import SECRET, claims, hs256

OpenWs = Callable[..., Awaitable[aiohttp.ClientWebSocketResponse]]


@pytest.fixture
async def open_ws(mounted: UvicornProcess) -> AsyncIterator[OpenWs]:
    """``await open_ws()``: an aiohttp WebSocket to ``/realtime/ws``, welcome read."""
    session = aiohttp.ClientSession()
    opened: list[aiohttp.ClientWebSocketResponse] = []

    async def connect(query: str = "", welcome: bool = True) -> aiohttp.ClientWebSocketResponse:
        url = f"http://{LOOPBACK}:{mounted.port}/realtime/ws{query}"
        ws = await session.ws_connect(url)
        opened.append(ws)
        if welcome:
            assert json.loads(await ws.receive_str(timeout=5)) == WELCOME
        return ws

    yield connect
    for ws in opened:
        await ws.close()
    await session.close()


async def request(ws: aiohttp.ClientWebSocketResponse, event: dict[str, Any]) -> Any:
    """Send one event; return the next reply (``context: response``)."""
    await ws.send_str(json.dumps(event))
    return await next_of(ws, "response")


async def next_of(ws: aiohttp.ClientWebSocketResponse, context: str) -> Any:
    for _ in range(50):
        message = json.loads(await ws.receive_str(timeout=5))
        if message.get("context") == context:
            return message
    raise AssertionError(f"no {context} message")


def create_room(port: int, name: str) -> None:
    reply = http_request(port, "GET", f"/realtime/api/createChatRoom?name={name}")
    assert reply.status == 200, reply.body


async def test_two_clients_chat_through_the_mounted_ws(
    mounted: UvicornProcess, open_ws: OpenWs
) -> None:
    room = unique_room()
    create_room(mounted.port, room)
    alice, bob = await open_ws(), await open_ws()
    for client in (alice, bob):
        joined = await request(client, {"event": "roomAdd", "room": room, "messageId": "j"})
        assert (joined["status"], joined["data"], joined["messageId"]) == ("OK", True, "j")
    said = await request(alice, {"event": "say", "room": room, "message": "hi bob"})
    assert said["status"] == "OK"
    alice_id = (await request(alice, {"event": "detailsView"}))["data"]["id"]
    message = await next_of(bob, "user")
    assert {k: message[k] for k in ("message", "room", "from", "context")} == {
        "message": "hi bob",
        "room": room,
        "from": alice_id,
        "context": "user",
    }


async def test_requests_on_the_mounted_ws_are_answered_in_order(open_ws: OpenWs) -> None:
    client = await open_ws()
    room = unique_room()
    for number in range(1, 6):
        await client.send_str(json.dumps({"event": "roomView", "room": room, "messageId": number}))
    replies = [await next_of(client, "response") for _ in range(5)]
    assert [(r["messageId"], r["messageCount"]) for r in replies] == [(n, n) for n in range(1, 6)]


async def test_quit_on_the_mounted_ws_says_bye_and_closes_1000(open_ws: OpenWs) -> None:
    client = await open_ws()
    await client.send_str(json.dumps({"event": "quit"}))
    assert json.loads(await client.receive_str(timeout=5)) == {"status": "Bye!", "context": "api"}
    closing = await client.receive(timeout=5)
    assert (closing.type, client.close_code) == (aiohttp.WSMsgType.CLOSE, 1000)


async def test_a_bad_token_on_the_mounted_ws_url_is_refused_with_1008(open_ws: OpenWs) -> None:
    client = await open_ws("?token=not-a-jwt", welcome=False)
    assert json.loads(await client.receive_str(timeout=5)) == {
        "status": "error",
        "error": "invalid token",
        "context": "api",
    }
    closing = await client.receive(timeout=5)
    assert (closing.type, client.close_code) == (aiohttp.WSMsgType.CLOSE, 1008)


def test_the_mounted_status_action_answers_over_http(mounted: UvicornProcess) -> None:
    reply = http_request(mounted.port, "GET", "/realtime/api/status")
    assert reply.status == 200
    assert reply.json()["id"] == mounted.node_id


def test_a_json_post_to_the_mounted_api_runs_the_action(mounted: UvicornProcess) -> None:
    name = unique_room()
    body = json.dumps({"name": name}).encode()
    headers = {"Content-Type": "application/json"}
    reply = http_request(mounted.port, "POST", "/realtime/api/createChatRoom", body, headers)
    assert (reply.status, reply.json()) == (200, {"didCreate": True})
    again = http_request(mounted.port, "POST", "/realtime/api/createChatRoom", body, headers)
    assert (again.status, again.json()) == (400, {"error": "room exists"})


def test_a_form_post_to_the_mounted_api_runs_the_action(mounted: UvicornProcess) -> None:
    body = urllib.parse.urlencode({"name": unique_room()}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    reply = http_request(mounted.port, "POST", "/realtime/api/createChatRoom", body, headers)
    assert (reply.status, reply.json()) == (200, {"didCreate": True})


def test_an_unknown_mounted_action_answers_404_json(mounted: UvicornProcess) -> None:
    reply = http_request(mounted.port, "GET", "/realtime/api/nothingHere")
    assert (reply.status, reply.json()) == (404, {"error": "unknown action or invalid apiVersion"})


def test_a_missing_param_answers_422(mounted: UvicornProcess) -> None:
    reply = http_request(mounted.port, "GET", "/realtime/api/createChatRoom")
    assert (reply.status, reply.json()) == (
        422,
        {"error": "name is a required parameter for this action"},
    )


def test_the_parent_route_still_answers(mounted: UvicornProcess) -> None:
    reply = http_request(mounted.port, "GET", "/hello")
    assert (reply.status, reply.body) == (200, b"hello from the parent app")


async def test_a_websockets_client_gets_the_replies_to_roomAdd_and_say(
    mounted: UvicornProcess,
) -> None:
    url = f"ws://{LOOPBACK}:{mounted.port}/realtime/ws"
    async with websockets.connect(url, open_timeout=5) as ws:
        assert json.loads(await ws.recv()) == WELCOME
        await ws.send(json.dumps({"event": "roomAdd", "room": "defaultRoom", "messageId": 1}))
        assert json.loads(await ws.recv()) == {
            "status": "OK",
            "context": "response",
            "data": True,
            "messageCount": 1,
            "messageId": 1,
        }
        await ws.send(json.dumps({"event": "say", "room": "defaultRoom", "message": "hey"}))
        received = [json.loads(await ws.recv()) for _ in range(2)]  # own message, then reply
        chat = next(m for m in received if m["context"] == "user")
        reply = next(m for m in received if m["context"] == "response")
        assert (chat["message"], chat["room"]) == ("hey", "defaultRoom")
        assert reply == {"status": "OK", "context": "response", "data": None, "messageCount": 2}


def test_a_mounted_node_starts_on_the_first_request_only() -> None:
    server = start_uvicorn("mounted", lifespan="off")
    try:
        assert "roomcast ready" not in server.log
        assert http_request(server.port, "GET", "/hello").status == 200
        assert "roomcast ready" not in server.log  # the parent's own route starts nothing
        assert http_request(server.port, "GET", "/realtime/api/status").status == 200
        assert server.log.count("roomcast ready") == 1
        assert http_request(server.port, "GET", "/realtime/api/status").status == 200
        assert server.log.count("roomcast ready") == 1
    finally:
        server.stop()


async def test_a_required_token_is_enforced_on_the_mounted_ws(tmp_path: Path) -> None:
    config = tmp_path / "roomcast.toml"
    config.write_text(f'[auth]\njwt_secret = "{SECRET}"\nrequired = true\n')
    server = start_uvicorn("mounted", lifespan="off", env={"ROOMCAST_CONFIG": str(config)})
    try:

        async def exchange(query: str) -> Any:
            url = f"ws://{LOOPBACK}:{server.port}/realtime/ws{query}"
            async with websockets.connect(url, open_timeout=5) as ws:
                assert json.loads(await ws.recv()) == WELCOME
                await ws.send(json.dumps({"event": "roomAdd", "room": "defaultRoom"}))
                return json.loads(await ws.recv())["status"]

        assert await exchange("") == "authentication required"
        assert await exchange(f"?token={hs256(claims('gus'))}") == "OK"
    finally:
        server.stop()


async def test_the_file_event_on_the_mounted_ws_answers_a_missing_file(open_ws: OpenWs) -> None:
    client = await open_ws()
    reply = await request(client, {"event": "file", "file": "nothing-here.txt"})
    assert reply == {
        "error": "That file is not found (nothing-here.txt)",
        "context": "response",
        "messageCount": 1,
    }


async def test_a_binary_message_on_the_mounted_ws_is_answered_with_an_error(
    open_ws: OpenWs,
) -> None:
    client = await open_ws()
    await client.send_bytes(b"\x00\x01")
    reply = await next_of(client, "response")
    assert reply == {
        "status": "error",
        "error": "binary frames are not supported: send JSON text frames",
        "context": "response",
        "messageCount": 1,
    }
