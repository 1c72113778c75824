"""What a node prints: the start line, JSON lines, debug lines for clients' comings and goings."""

from __future__ import annotations

import json

from support import LineClient, running_node, wait_until


def test_the_ready_line_names_the_store_and_the_chat_page() -> None:
    with running_node() as node:
        line = next(x for x in node.log.splitlines() if "roomcast ready" in x)
        assert (
            f"roomcast ready {node.node_id} socket={node.socket_port} web={node.web_port}" in line
        )
        assert "store=embedded" in line
        assert f"chat=http://127.0.0.1:{node.web_port}/chat.html" in line


def test_json_log_format_prints_one_object_a_line_with_the_node_id() -> None:
    with running_node("--log-format", "json", "--log-level", "debug") as node:
        client = LineClient(node.socket_port)
        client.read()
        assert client.request("roomAdd defaultRoom")["status"] == "OK"
        client.close()
        wait_until(lambda: "left defaultRoom" in node.log, message="the leave logged")
    entries = [json.loads(line) for line in node.log.splitlines() if line.strip()]
    assert entries and all(
        {"time", "level", "logger", "message", "node"} <= set(e) for e in entries
    )
    assert {e["node"] for e in entries} == {node.node_id}
    messages = [e["message"] for e in entries]
    assert any(m.startswith("roomcast ready") for m in messages)


def test_debug_logs_show_connections_joins_leaves_and_refusals() -> None:
    with running_node("--log-level", "debug") as node:
        client = LineClient(node.socket_port)
        client.read()
        me = client.request("detailsView")["data"]["id"]
        assert client.request("roomAdd defaultRoom")["status"] == "OK"
        assert client.request("roomAdd nowhere")["status"] == "room does not exist"
        assert client.request("roomLeave defaultRoom")["status"] == "OK"
        client.send_line("quit")
        assert client.is_closed()
        client.close()
        wait_until(lambda: "closed" in node.log and me in node.log, message="close logged")
        log = node.log
    assert f"{me} joined defaultRoom" in log
    assert f"{me} left defaultRoom" in log
    assert f"roomAdd refused for {me}: room does not exist" in log
    assert "opened" in log and "closed" in log
    refusals = [line for line in log.splitlines() if "refused for" in line]
    assert refusals and all(" DEBUG " in line for line in refusals)
