"""Whatever bytes a client sends, the parsers answer with a request or a clear error.

Property-based (hypothesis): the TCP line splitter and parser and the WebSocket event
parser are fed arbitrary bytes, invalid UTF-8, deep and huge JSON, wrong types for every
field and hostile room names; then the same kinds of input go to a real node while an
honest client chats, and the honest client sees only its own conversation.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomcast.protocol.requests import (
    ActionRequest,
    FileRequest,
    InvalidRequest,
    QuitRequest,
    VerbRequest,
)
from roomcast.protocol.socket_lines import (
    Interrupt,
    Line,
    LineSplitter,
    NotUtf8,
    TooLong,
    parse_line,
)
from roomcast.protocol.websocket_events import parse_event
from support import LOOPBACK, LineClient, NodeProcess, start_node

REQUESTS = (VerbRequest, ActionRequest, FileRequest, QuitRequest, InvalidRequest)
LIMIT = 4096

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
hostile_names = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(categories=("Cc", "Cs", "Zs", "So"))),
    st.just("\x00"),
    st.just("a" * 300),
    st.just("é" * 200),
    json_values,
)
FIELDS = ("event", "room", "message", "params", "file", "messageId", "since", "epoch")


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@given(st.lists(st.binary(max_size=600), max_size=12))
def test_the_line_splitter_turns_any_bytes_into_line_events(chunks: list[bytes]) -> None:
    splitter = LineSplitter(LIMIT)
    for chunk in chunks:
        for event in splitter.feed(chunk):
            assert isinstance(event, Line | TooLong | NotUtf8 | Interrupt)
            if isinstance(event, Line):
                assert len(event.text.encode()) <= LIMIT
                request = parse_line(event.text)
                assert request is None or isinstance(request, REQUESTS)


@given(st.text(max_size=2000))
def test_any_line_parses_to_a_request_or_a_clear_error(text: str) -> None:
    request = parse_line(text)
    assert request is None or isinstance(request, REQUESTS)
    if isinstance(request, InvalidRequest):
        assert request.error and isinstance(request.error, str)


@given(st.dictionaries(st.sampled_from(FIELDS), hostile_names, max_size=len(FIELDS)))
def test_any_websocket_frame_parses_to_a_request_or_a_clear_error(
    frame: dict[str, Any],
) -> None:
    request, _ = parse_event(json.dumps(frame))
    assert isinstance(request, REQUESTS)
    if isinstance(request, InvalidRequest):
        assert request.error and isinstance(request.error, str)


@given(st.binary(max_size=2000))
def test_any_bytes_in_a_websocket_frame_parse_to_a_request_or_a_clear_error(
    data: bytes,
) -> None:
    request, _ = parse_event(data)
    assert isinstance(request, REQUESTS)


@pytest.mark.parametrize("depth", [100, 10_000, 200_000])
def test_deeply_nested_json_is_refused_clearly_on_both_wires(depth: int) -> None:
    for request in (parse_line(deep(depth)), parse_event(deep(depth))[0]):
        assert isinstance(request, InvalidRequest)


# the same against a real node ---------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    process = start_node()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def honest(node: NodeProcess) -> Iterator[LineClient]:
    client = LineClient(node.socket_port)
    client.read()
    assert client.request("roomAdd defaultRoom")["status"] == "OK"
    yield client
    client.close()


garbage_lines = st.one_of(
    st.binary(min_size=1, max_size=3000),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(
        lambda name: f"roomAdd {name}".encode("utf-8", "surrogatepass"),
        hostile_names.filter(lambda n: isinstance(n, str)),
    ),
    st.builds(lambda name: f"say {name} hi".encode("utf-8", "surrogatepass"), st.text()),
    st.just(deep(2_000).encode()),  # deeper than any JSON parser here accepts
    st.just(b"\xff\xfe\xfd not utf-8"),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(garbage_lines, min_size=1, max_size=5))
def test_garbage_from_one_client_reaches_no_other_client_and_gets_answers(
    node: NodeProcess, honest: LineClient, lines: list[bytes]
) -> None:
    with socket.create_connection((LOOPBACK, node.socket_port), timeout=10) as attacker:
        attacker.sendall(
            b"".join(line.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n" for line in lines)
        )
        attacker.sendall(b"detailsView\n")
        received = b""
        while b'"fingerprint"' not in received:  # the detailsView reply comes last
            chunk = attacker.recv(65536)
            assert chunk, f"the node closed the attacker's connection: {received[-500:]!r}"
            received += chunk
        for raw in received.split(b"\r\n"):
            if raw and raw[:1] == b"{":
                reply = json.loads(raw)
                assert isinstance(reply, dict) and "context" in reply
    # The honest client's conversation is untouched: its own say comes back, nothing else.
    honest.send_line("say defaultRoom still here")
    seen: list[dict[str, Any]] = []

    def the_reply(message: dict[str, Any]) -> bool:
        seen.append(message)
        return message.get("context") == "response"

    honest.read_until(the_reply)
    assert [m.get("message") for m in seen if m.get("context") == "user"] == ["still here"]
    assert seen[-1]["status"] == "OK"
