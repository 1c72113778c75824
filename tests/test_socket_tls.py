"""The socket protocol over TLS (``--tls-cert``/``--tls-key``), with a test-made certificate."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from support import LOOPBACK, LineClient, NodeProcess, free_port, start_node


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_node(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    directory = tmp_path_factory.mktemp("tls")
    server_cert = ca.issue_cert(LOOPBACK, "localhost")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(b"".join(pem.bytes() for pem in server_cert.cert_chain_pems))
    server_cert.private_key_pem.write_to_path(str(key_path))
    process = start_node("--tls-cert", str(cert_path), "--tls-key", str(key_path), web_port=0)
    yield process
    assert process.stop() == 0


def tls_client(node: NodeProcess, ca: trustme.CA, server_hostname: str = LOOPBACK) -> LineClient:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    raw = socket.create_connection((LOOPBACK, node.socket_port), timeout=5)
    return LineClient(
        node.socket_port, sock=context.wrap_socket(raw, server_hostname=server_hostname)
    )


def test_tls_welcome_line_byte_for_byte(tls_node: NodeProcess, ca: trustme.CA) -> None:
    client = tls_client(tls_node, ca)
    try:
        assert client.read_raw_line() == (
            b'{"welcome":"Hello! Welcome to the roomcast api","context":"api"}'
        )
    finally:
        client.close()


def test_tls_certificate_verifies_for_localhost_too(tls_node: NodeProcess, ca: trustme.CA) -> None:
    client = tls_client(tls_node, ca, server_hostname="localhost")
    try:
        assert client.read()["context"] == "api"
    finally:
        client.close()


def test_tls_verbs_and_actions_work(tls_node: NodeProcess, ca: trustme.CA) -> None:
    client = tls_client(tls_node, ca)
    try:
        client.read()
        assert client.request("paramAdd who=tls") == {
            "status": "OK",
            "context": "response",
            "data": None,
            "messageCount": 1,
        }
        assert client.request("status")["id"] == tls_node.node_id
    finally:
        client.close()


def test_tls_chat_reaches_every_member_including_the_sender(
    tls_node: NodeProcess, ca: trustme.CA
) -> None:
    alice, bob = tls_client(tls_node, ca), tls_client(tls_node, ca)
    try:
        for client in (alice, bob):
            client.read()
            assert client.request("roomAdd defaultRoom")["data"] is True
        alice.send_line("say defaultRoom secret hello")
        for client in (alice, bob):
            message = client.read_until(lambda m: m.get("context") == "user")
            assert (message["message"], message["room"]) == ("secret hello", "defaultRoom")
    finally:
        alice.close()
        bob.close()


def test_tls_quit_says_bye(tls_node: NodeProcess, ca: trustme.CA) -> None:
    client = tls_client(tls_node, ca)
    try:
        client.read()
        client.send_line("quit")
        assert client.read_raw_line() == b'{"status":"Bye!","context":"api"}'
    finally:
        client.close()


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_node: NodeProcess) -> None:
    context = ssl.create_default_context()  # system roots only
    raw = socket.create_connection((LOOPBACK, tls_node.socket_port), timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname=LOOPBACK)
    raw.close()


def test_a_plaintext_client_gets_no_welcome_and_the_node_keeps_serving(
    tls_node: NodeProcess, ca: trustme.CA
) -> None:
    plain = LineClient(tls_node.socket_port, timeout=3)
    try:
        plain.send_line("roomAdd defaultRoom")
        with pytest.raises(ConnectionError):
            plain.read()  # the failed handshake closes it: no JSON welcome
    finally:
        plain.close()
    client = tls_client(tls_node, ca)
    try:
        assert client.read()["context"] == "api"
    finally:
        client.close()


def test_missing_certificate_files_stop_the_node_with_exit_code_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "roomcast",
            "start",
            "--socket-port",
            str(free_port()),
            "--web-port",
            "0",
            "--tls-cert",
            str(tmp_path / "none.pem"),
            "--tls-key",
            str(tmp_path / "none.key"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("roomcast: cannot read the --tls-cert file")
