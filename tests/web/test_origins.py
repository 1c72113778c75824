"""[web] allowed_origins: WebSocket upgrades and HTTP requests from other origins get 403;
requests without an Origin header (not from a browser page) are let through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from websupport import http_request

from limits_support import node_with, upgrade_status
from support import NodeProcess

FORBIDDEN = b"HTTP/1.1 403 Forbidden"
SWITCHING = b"HTTP/1.1 101 Switching Protocols"


@pytest.fixture(scope="module")
def strict_node() -> Iterator[NodeProcess]:
    settings = '[web]\nallowed_origins = ["https://App.Example.com", "http://127.0.0.1:8080"]\n'
    with node_with(settings) as node:
        yield node


@pytest.mark.parametrize(
    "origin",
    ["https://app.example.com", "HTTPS://APP.EXAMPLE.COM", "https://app.example.com:443"],
)
def test_an_upgrade_from_an_allowed_origin_is_accepted_whatever_its_case(
    strict_node: NodeProcess, origin: str
) -> None:
    assert upgrade_status(strict_node.web_port, origin) == SWITCHING


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://app.example.com", "https://app.example.com:8443", "null"],
)
def test_a_first_request_upgrade_from_another_origin_gets_403(
    strict_node: NodeProcess, origin: str
) -> None:
    assert upgrade_status(strict_node.web_port, origin) == FORBIDDEN


def test_a_kept_alive_upgrade_from_another_origin_gets_403(strict_node: NodeProcess) -> None:
    status = upgrade_status(strict_node.web_port, "https://evil.example", kept_alive=True)
    assert status == FORBIDDEN


def test_an_upgrade_without_an_origin_header_is_accepted(strict_node: NodeProcess) -> None:
    assert upgrade_status(strict_node.web_port) == SWITCHING


def test_an_http_action_call_from_another_origin_gets_403(strict_node: NodeProcess) -> None:
    reply = http_request(
        strict_node.web_port, "POST", "/api/status", headers={"Origin": "https://evil.example"}
    )
    assert (reply.status, reply.json()) == (403, {"error": "origin not allowed"})


def test_an_http_action_call_from_an_allowed_origin_is_answered(strict_node: NodeProcess) -> None:
    reply = http_request(
        strict_node.web_port, "GET", "/api/status", headers={"Origin": "http://127.0.0.1:8080"}
    )
    assert reply.status == 200
    assert reply.json()["id"] == strict_node.node_id


def test_an_http_request_without_an_origin_header_is_answered(strict_node: NodeProcess) -> None:
    assert http_request(strict_node.web_port, "GET", "/api/status").status == 200


def test_any_origin_is_allowed_when_the_list_is_empty(web_node: NodeProcess) -> None:
    assert upgrade_status(web_node.web_port, "https://anywhere.example") == SWITCHING
    reply = http_request(
        web_node.web_port, "GET", "/api/status", headers={"Origin": "https://anywhere.example"}
    )
    assert reply.status == 200
