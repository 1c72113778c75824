"""examples/actions: the greet action and the example chat middleware."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import LineClient, NodeProcess, start_node

ACTIONS = Path(__file__).resolve().parents[2] / "examples" / "actions"


@pytest.fixture(scope="module")
def greetings_node() -> Iterator[NodeProcess]:
    node = start_node("--actions", str(ACTIONS))
    yield node
    node.stop()


@pytest.fixture
def client(greetings_node: NodeProcess) -> Iterator[LineClient]:
    client = LineClient(greetings_node.socket_port)
    client.read()  # welcome
    yield client
    client.close()


def test_greet_answers_with_the_greeting_repeated(client: LineClient) -> None:
    assert client.request('{"action":"greet","params":{"name":"Ada","times":2}}') == {
        "greeting": "Hello, Ada! Hello, Ada!",
        "context": "response",
        "messageCount": 1,
    }


def test_messages_in_loud_are_upper_cased(client: LineClient) -> None:
    client.request('{"action":"createChatRoom","params":{"name":"loud"}}')
    assert client.request("roomAdd loud")["status"] == "OK"
    client.send_line("say loud hello there")
    heard = client.read_until(lambda m: isinstance(m, dict) and m.get("context") == "user")
    assert heard["message"] == "HELLO THERE"
