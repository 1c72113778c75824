"""--tls-cert/--tls-key make the web port HTTPS and WSS (the TCP port TLS as well)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest
import trustme

from limits_support import http_status_line, upgrade_request
from support import LOOPBACK, NodeProcess, start_node


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_node(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    directory = tmp_path_factory.mktemp("web-tls")
    server_cert = ca.issue_cert(LOOPBACK, "localhost")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(b"".join(pem.bytes() for pem in server_cert.cert_chain_pems))
    server_cert.private_key_pem.write_to_path(str(key_path))
    process = start_node("--tls-cert", str(cert_path), "--tls-key", str(key_path))
    yield process
    assert process.stop() == 0


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_https_answers_an_action(tls_node: NodeProcess, client_context: ssl.SSLContext) -> None:
    url = f"https://{LOOPBACK}:{tls_node.web_port}/api/status"
    with urllib.request.urlopen(url, context=client_context, timeout=5) as reply:
        assert reply.status == 200
        assert json.loads(reply.read())["id"] == tls_node.node_id


def test_the_ready_line_names_the_https_chat_page(tls_node: NodeProcess) -> None:
    assert f"chat=https://{LOOPBACK}:{tls_node.web_port}/chat.html" in tls_node.log


async def test_wss_clients_chat_and_hear_each_other(
    tls_node: NodeProcess, client_context: ssl.SSLContext
) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"wss://{LOOPBACK}:{tls_node.web_port}/ws"
        async with (
            session.ws_connect(url, ssl=client_context) as alice,
            session.ws_connect(url, ssl=client_context) as bob,
        ):
            for ws in (alice, bob):
                assert (await ws.receive_json(timeout=5))["context"] == "api"
                await ws.send_json({"event": "roomAdd", "room": "defaultRoom"})
                assert (await ws.receive_json(timeout=5))["data"] is True
            await alice.send_json({"event": "say", "room": "defaultRoom", "message": "over wss"})
            while True:
                message = await bob.receive_json(timeout=5)
                if message.get("context") == "user":
                    break
            assert message["message"] == "over wss"


def test_a_kept_alive_upgrade_over_tls_switches_protocols(
    tls_node: NodeProcess, client_context: ssl.SSLContext
) -> None:
    raw = socket.create_connection((LOOPBACK, tls_node.web_port), timeout=5)
    with client_context.wrap_socket(raw, server_hostname=LOOPBACK) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert http_status_line(sock) == b"HTTP/1.1 200 OK"
        sock.sendall(upgrade_request())
        assert http_status_line(sock) == b"HTTP/1.1 101 Switching Protocols"


def test_plaintext_http_to_the_tls_web_port_fails(
    tls_node: NodeProcess, client_context: ssl.SSLContext
) -> None:
    connection = http.client.HTTPConnection(LOOPBACK, tls_node.web_port, timeout=5)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            connection.request("GET", "/api/status")
            connection.getresponse()
    finally:
        connection.close()
    url = f"https://{LOOPBACK}:{tls_node.web_port}/health"  # and the port still serves TLS
    with urllib.request.urlopen(url, context=client_context, timeout=5) as reply:
        assert reply.status == 200
