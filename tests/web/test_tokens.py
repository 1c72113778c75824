"""Signed tokens end to end: ``?token=`` on the WebSocket URL, the ``authenticate`` action
over TCP, WebSocket and HTTP, private rooms, required tokens, RS256, bad key files."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websupport import WELCOME, RawWebSocket, create_room, http_request

from support import LOOPBACK, LineClient, NodeProcess, start_node
from tokens import AUDIENCE, SECRET, KeyPair, claims, hs256, unsigned

INVALID = {"status": "error", "error": "invalid token", "context": "api"}
PRIVATE_ROOM = "private-club"


def start_auth_node(tmp_path: Path, auth: str) -> NodeProcess:
    config = tmp_path / "roomcast.toml"
    config.write_text(f"[auth]\n{auth}")
    return start_node("--config", str(config))


@pytest.fixture(scope="module")
def token_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """HS256 tokens for the test audience; rooms ``private-*`` need a ``rooms`` claim."""
    node = start_auth_node(
        tmp_path_factory.mktemp("tokens"),
        f'jwt_secret = "{SECRET}"\naudience = "{AUDIENCE}"\nprivate_rooms = ["private-*"]\n',
    )
    create_room(node.web_port, PRIVATE_ROOM)
    yield node
    node.stop()


@pytest.fixture(scope="module")
def required_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """Every join and say needs a valid token."""
    node = start_auth_node(
        tmp_path_factory.mktemp("required"), f'jwt_secret = "{SECRET}"\nrequired = true\n'
    )
    yield node
    node.stop()


def token(sub: str = "alice", **more: Any) -> str:
    """A token the token node accepts, unless ``more`` says otherwise."""
    return hs256(claims(sub, **{"aud": AUDIENCE, **more}))


async def open_ws(port: int, **params: str) -> RawWebSocket:
    return await RawWebSocket.open(port, params=params or None)


async def assert_refused_1008(client: RawWebSocket) -> None:
    assert await client.receive() == INVALID
    closing = await client.ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert client.ws.close_code == 1008


def tcp_client(port: int) -> LineClient:
    client = LineClient(port)
    assert client.read() == WELCOME
    return client


def authenticate_line(jwt: str) -> str:
    return json.dumps({"action": "authenticate", "params": {"token": jwt}})


# ?token= on the WebSocket URL ------------------------------------------------------------


async def test_a_valid_url_token_makes_its_sub_the_user_shown_in_detailsView(
    token_node: NodeProcess,
) -> None:
    client = await open_ws(token_node.web_port, token=token("alice"))
    try:
        assert await client.receive() == WELCOME
        details = (await client.request({"event": "detailsView"}))["data"]
        assert details["user"] == "alice"
    finally:
        await client.close()


async def test_an_expired_url_token_is_told_invalid_token_and_closed_1008(
    token_node: NodeProcess,
) -> None:
    client = await open_ws(token_node.web_port, token=token(ttl=-30))
    try:
        await assert_refused_1008(client)
    finally:
        await client.close()


async def test_a_url_token_with_a_bad_signature_is_refused(token_node: NodeProcess) -> None:
    forged = hs256(claims(aud=AUDIENCE), secret="another-secret-of-at-least-32-bytes!")
    client = await open_ws(token_node.web_port, token=forged)
    try:
        await assert_refused_1008(client)
    finally:
        await client.close()


def test_a_bad_url_token_on_a_kept_alive_connection_is_refused_too(
    token_node: NodeProcess,
) -> None:
    with socket.create_connection((LOOPBACK, token_node.web_port), timeout=5) as sock:
        reader = sock.makefile("rb")
        sock.sendall(f"GET /api/status HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
        length = read_head(reader)["content-length"]
        reader.read(int(length))
        sock.sendall(
            f"GET /ws?token=not-a-jwt HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert read_head(reader)[":status"] == "101"
        assert read_frame(reader) == (0x1, json.dumps(INVALID, separators=(",", ":")).encode())
        opcode, payload = read_frame(reader)
        assert (opcode, struct.unpack("!H", payload[:2])[0]) == (0x8, 1008)


def read_head(reader: Any) -> dict[str, str]:
    status = reader.readline().split()[1].decode()
    head = {":status": status}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        head[name.strip().lower()] = value.strip()
    return head


def read_frame(reader: Any) -> tuple[int, bytes]:
    first, size = reader.read(2)
    if size == 126:
        size = struct.unpack("!H", reader.read(2))[0]
    return first & 0x0F, reader.read(size)


# the authenticate action -----------------------------------------------------------------


def test_authenticate_over_tcp_answers_the_user_and_detailsView_shows_it(
    token_node: NodeProcess,
) -> None:
    client = tcp_client(token_node.socket_port)
    try:
        reply = client.request(authenticate_line(token("bob")))
        assert reply == {"user": "bob", "context": "response", "messageCount": 1}
        assert client.request("detailsView")["data"]["user"] == "bob"
    finally:
        client.close()


def test_detailsView_has_no_user_before_a_token(token_node: NodeProcess) -> None:
    client = tcp_client(token_node.socket_port)
    try:
        assert "user" not in client.request("detailsView")["data"]
    finally:
        client.close()


def test_authenticate_over_tcp_with_an_expired_token_answers_invalid_token(
    token_node: NodeProcess,
) -> None:
    client = tcp_client(token_node.socket_port)
    try:
        reply = client.request(authenticate_line(token(ttl=-30)))
        assert reply["error"] == "invalid token"
        assert "user" not in client.request("detailsView")["data"]
    finally:
        client.close()


def test_authenticate_over_tcp_refuses_the_none_algorithm(token_node: NodeProcess) -> None:
    client = tcp_client(token_node.socket_port)
    try:
        reply = client.request(authenticate_line(unsigned(claims(aud=AUDIENCE))))
        assert reply["error"] == "invalid token"
    finally:
        client.close()


async def test_authenticate_over_websocket_refuses_a_token_for_another_audience(
    token_node: NodeProcess,
) -> None:
    client = await open_ws(token_node.web_port)
    try:
        assert await client.receive() == WELCOME
        reply = await client.request(
            {"event": "action", "params": {"action": "authenticate", "token": token(aud="x")}}
        )
        assert reply["error"] == "invalid token"
    finally:
        await client.close()


def test_authenticate_over_http_answers_401_for_a_bad_signature(
    token_node: NodeProcess,
) -> None:
    forged = hs256(claims(aud=AUDIENCE), secret="another-secret-of-at-least-32-bytes!")
    reply = http_request(token_node.web_port, "GET", f"/api/authenticate?token={forged}")
    assert (reply.status, reply.json()) == (401, {"error": "invalid token"})


# private rooms ---------------------------------------------------------------------------


async def test_a_private_room_is_joined_with_a_rooms_claim_that_matches(
    token_node: NodeProcess,
) -> None:
    client = await open_ws(token_node.web_port, token=token(rooms=["private-*"]))
    try:
        assert await client.receive() == WELCOME
        reply = await client.request({"event": "roomAdd", "room": PRIVATE_ROOM})
        assert (reply["status"], reply["data"]) == ("OK", True)
    finally:
        await client.close()


def test_a_private_room_is_refused_without_a_token(token_node: NodeProcess) -> None:
    client = tcp_client(token_node.socket_port)
    try:
        reply = client.request(f"roomAdd {PRIVATE_ROOM}")
        assert (reply["status"], reply["data"]) == ("not authorized", False)
    finally:
        client.close()


def test_a_private_room_is_refused_when_the_rooms_claim_does_not_match(
    token_node: NodeProcess,
) -> None:
    client = tcp_client(token_node.socket_port)
    try:
        assert "user" in client.request(authenticate_line(token(rooms=["team-*"])))
        assert client.request(f"roomAdd {PRIVATE_ROOM}")["status"] == "not authorized"
        assert client.request("roomAdd defaultRoom")["status"] == "OK"  # not private
    finally:
        client.close()


# required tokens -------------------------------------------------------------------------


def test_required_tokens_refuse_a_join_without_one(required_node: NodeProcess) -> None:
    client = tcp_client(required_node.socket_port)
    try:
        reply = client.request("roomAdd defaultRoom")
        assert (reply["status"], reply["data"]) == ("authentication required", False)
    finally:
        client.close()


def test_required_tokens_are_checked_before_any_other_check_of_a_say(
    required_node: NodeProcess,
) -> None:
    client = tcp_client(required_node.socket_port)
    try:
        # Not a member and no message: without a token those errors are not reached.
        assert client.request("say nowhere")["status"] == "authentication required"
    finally:
        client.close()


async def test_required_tokens_let_an_authenticated_client_join_and_say(
    required_node: NodeProcess,
) -> None:
    client = await open_ws(required_node.web_port, token=hs256(claims("dora")))
    try:
        assert await client.receive() == WELCOME
        assert (await client.request({"event": "roomAdd", "room": "defaultRoom"}))["data"]
        await client.send({"event": "say", "room": "defaultRoom", "message": "hello"})
        message = await client.chat()
        assert message["message"] == "hello"
    finally:
        await client.close()


async def test_required_tokens_let_a_client_join_after_authenticate(
    required_node: NodeProcess,
) -> None:
    client = await open_ws(required_node.web_port)
    try:
        assert await client.receive() == WELCOME
        refused = await client.request({"event": "roomAdd", "room": "defaultRoom"})
        assert refused["status"] == "authentication required"
        params = {"action": "authenticate", "token": hs256(claims("erin"))}
        assert (await client.request({"event": "action", "params": params}))["user"] == "erin"
        assert (await client.request({"event": "roomAdd", "room": "defaultRoom"}))["data"]
    finally:
        await client.close()


# RS256 and key files ---------------------------------------------------------------------


def test_an_rs256_node_accepts_a_token_signed_with_the_private_key(tmp_path: Path) -> None:
    pair = KeyPair("rsa")
    public = pair.write_public(tmp_path / "public.pem")
    node = start_auth_node(tmp_path, f'jwt_public_key = "{public}"\n')
    try:
        client = tcp_client(node.socket_port)
        try:
            assert client.request(authenticate_line(pair.sign(claims("frank"))))["user"] == "frank"
            other = KeyPair("rsa").sign(claims("mallory"))
            assert client.request(authenticate_line(other))["error"] == "invalid token"
        finally:
            client.close()
    finally:
        node.stop()


@pytest.mark.parametrize("content", [None, "not a key\n"], ids=["missing", "not-pem"])
def test_a_bad_public_key_file_stops_roomcast_start_with_exit_2(
    tmp_path: Path, content: str | None
) -> None:
    key = tmp_path / "public.pem"
    if content is not None:
        key.write_text(content)
    config = tmp_path / "roomcast.toml"
    config.write_text(f'[auth]\njwt_public_key = "{key}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "roomcast", "start", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "[auth] jwt_public_key" in done.stderr
