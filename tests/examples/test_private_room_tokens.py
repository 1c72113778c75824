"""examples/private_room/tokens with a real node: the token way to private rooms. The node
runs the example's settings file and no code; tokens come from the example's mint script."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets

from roomcast.client import ClientError, WebSocketClient
from support import LOOPBACK, LineClient, NodeProcess, start_node
from tokens import claims, hs256

TOKENS = Path(__file__).resolve().parents[2] / "examples" / "private_room" / "tokens"
CONFIG = TOKENS / "roomcast.toml"
LOUNGE = "private:lounge"
INVALID_TOKEN = {"status": "error", "error": "invalid token", "context": "api"}
WELCOME = {"welcome": "Hello! Welcome to the roomcast api", "context": "api"}


def mint(*args: str) -> str:
    """A token from the example's script, as its README runs it."""
    result = subprocess.run(
        [sys.executable, str(TOKENS / "mint_token.py"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def forged(**more: Any) -> str:
    """A well-formed token for ``eve`` signed with a secret other than the node's."""
    return hs256(claims("eve", rooms=["*"], **more), "not-the-node-secret-but-as-long-as-it")


@pytest.fixture(scope="module")
def token_node() -> Iterator[NodeProcess]:
    node = start_node("--config", str(CONFIG))
    yield node
    node.stop()


@pytest.fixture(scope="module")
def ada_token() -> str:
    return mint("ada", "private:*")


async def ws_exchange(
    node: NodeProcess, query: str, events: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Connect to ``/ws<query>``, read the welcome, send each event, return each reply."""
    url = f"ws://{LOOPBACK}:{node.web_port}/ws{query}"
    async with websockets.connect(url, open_timeout=5) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == WELCOME
        replies: list[dict[str, Any]] = []
        for event in events:
            await ws.send(json.dumps(event))
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        return replies


def tcp_client(node: NodeProcess) -> LineClient:
    client = LineClient(node.socket_port)
    assert client.read() == WELCOME
    return client


def test_the_mint_script_signs_with_the_example_settings_secret(ada_token: str) -> None:
    secret = tomllib.loads(CONFIG.read_text())["auth"]["jwt_secret"]
    decoded = jwt.decode(ada_token, secret, algorithms=["HS256"])
    assert (decoded["sub"], decoded["rooms"]) == ("ada", ["private:*"])


async def test_a_minted_token_on_the_ws_url_admits_to_the_private_room(
    token_node: NodeProcess, ada_token: str
) -> None:
    joined, details = await ws_exchange(
        token_node,
        f"?token={ada_token}",
        [{"event": "roomAdd", "room": LOUNGE}, {"event": "detailsView"}],
    )
    assert joined == {"status": "OK", "context": "response", "data": True, "messageCount": 1}
    assert details["data"]["user"] == "ada"
    assert details["data"]["rooms"] == [LOUNGE]


async def test_without_a_token_the_private_room_is_not_authorized_and_public_rooms_open(
    token_node: NodeProcess,
) -> None:
    private, public = await ws_exchange(
        token_node,
        "",
        [{"event": "roomAdd", "room": LOUNGE}, {"event": "roomAdd", "room": "defaultRoom"}],
    )
    assert private == {
        "status": "not authorized",
        "context": "response",
        "data": False,
        "messageCount": 1,
    }
    assert public["data"] is True


async def test_a_token_for_other_rooms_is_not_authorized_for_the_lounge(
    token_node: NodeProcess,
) -> None:
    token = mint("bob", "private:kitchen")
    (reply,) = await ws_exchange(
        token_node, f"?token={token}", [{"event": "roomAdd", "room": LOUNGE}]
    )
    assert reply["status"] == "not authorized"


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "forged": forged,
    "expired": lambda: mint("ada", "private:*", "--ttl", "-10"),
    "malformed": lambda: "not-a-jwt",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_a_forged_expired_or_malformed_token_on_the_ws_url_is_refused_with_1008(
    token_node: NodeProcess, kind: str
) -> None:
    url = f"ws://{LOOPBACK}:{token_node.web_port}/ws?token={BAD_TOKENS[kind]()}"
    async with websockets.connect(url, open_timeout=5) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == INVALID_TOKEN
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008


def test_the_authenticate_action_over_tcp_opens_the_private_room(
    token_node: NodeProcess, ada_token: str
) -> None:
    client = tcp_client(token_node)
    try:
        assert client.request(f"roomAdd {LOUNGE}")["status"] == "not authorized"
        reply = client.request(
            json.dumps({"action": "authenticate", "params": {"token": ada_token}})
        )
        assert reply == {"user": "ada", "context": "response", "messageCount": 2}
        assert client.request(f"roomAdd {LOUNGE}") == {
            "status": "OK",
            "context": "response",
            "data": True,
            "messageCount": 3,
        }
    finally:
        client.close()


def test_a_forged_token_in_authenticate_is_refused_and_the_room_stays_closed(
    token_node: NodeProcess,
) -> None:
    client = tcp_client(token_node)
    try:
        reply = client.request(
            json.dumps({"action": "authenticate", "params": {"token": forged()}})
        )
        assert reply == {"error": "invalid token", "context": "response", "messageCount": 1}
        assert client.request(f"roomAdd {LOUNGE}")["status"] == "not authorized"
    finally:
        client.close()


async def test_the_python_client_with_a_token_joins_the_lounge_and_without_is_refused(
    token_node: NodeProcess, ada_token: str
) -> None:
    url = f"ws://{LOOPBACK}:{token_node.web_port}/ws"
    async with WebSocketClient(f"{url}?token={ada_token}") as client:
        assert await client.room_add(LOUNGE) is True
        assert (await client.details_view())["user"] == "ada"
    async with WebSocketClient(url) as anonymous:
        with pytest.raises(ClientError, match=r"^not authorized$"):
            await anonymous.room_add(LOUNGE)
