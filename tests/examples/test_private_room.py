"""examples/private_room with a real node: private:* rooms admit only connections that
logged in with the room password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import LineClient, NodeProcess, start_node

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "private_room"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def private_node() -> Iterator[NodeProcess]:
    node = start_node(
        "--actions", str(EXAMPLE), web_port=0, env={"PRIVATE_ROOM_PASSWORD": PASSWORD}
    )
    yield node
    node.stop()


@pytest.fixture
def client(private_node: NodeProcess) -> Iterator[LineClient]:
    client = LineClient(private_node.socket_port)
    client.read()  # the welcome
    yield client
    client.close()


def login(client: LineClient, password: str) -> dict[str, object]:
    reply: dict[str, object] = client.request(
        f'{{"action":"login","params":{{"password":"{password}"}}}}'
    )
    return reply


def test_joining_a_private_room_without_logging_in_is_not_authorized(client: LineClient) -> None:
    assert client.request("roomAdd private:lounge") == {
        "status": "not authorized",
        "context": "response",
        "data": False,
        "messageCount": 1,
    }


def test_login_with_a_wrong_password_is_refused_and_the_room_stays_closed(
    client: LineClient,
) -> None:
    assert login(client, "guess") == {
        "error": "wrong password",
        "context": "response",
        "messageCount": 1,
    }
    assert client.request("roomAdd private:lounge")["status"] == "not authorized"


def test_login_with_the_right_password_opens_the_private_room(client: LineClient) -> None:
    assert login(client, PASSWORD) == {
        "authenticated": True,
        "context": "response",
        "messageCount": 1,
    }
    assert client.request("roomAdd private:lounge") == {
        "status": "OK",
        "context": "response",
        "data": True,
        "messageCount": 2,
    }


def test_public_rooms_need_no_login(client: LineClient) -> None:
    assert client.request("roomAdd defaultRoom")["data"] is True


def test_a_login_marks_only_its_own_connection(
    private_node: NodeProcess, client: LineClient
) -> None:
    login(client, PASSWORD)
    other = LineClient(private_node.socket_port)
    try:
        other.read()
        assert other.request("roomAdd private:lounge")["status"] == "not authorized"
    finally:
        other.close()
