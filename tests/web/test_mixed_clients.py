"""TCP, WebSocket and Python-client users chatting in one room of one node."""

from __future__ import annotations

import asyncio
from typing import Any

from websupport import WELCOME, RawWebSocket, now_ms

from roomcast.client import SocketClient, WebSocketClient
from support import LOOPBACK, LineClient, NodeProcess

END = "-- end of conversation --"


def tcp_join(port: int, room: str) -> tuple[LineClient, str]:
    """A TCP client (blocking; run it in a thread) that joined ``room``; returns its id."""
    client = LineClient(port)
    assert client.read() == WELCOME
    assert client.request(f"roomAdd {room}")["status"] == "OK"
    return client, client.request("detailsView")["data"]["id"]


def tcp_request_keeping_chat(
    client: LineClient, line: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send ``line``; return its reply and the chat messages that arrived before it."""
    client.send_line(line)
    chat: list[dict[str, Any]] = []
    while True:
        message = client.read()
        if message.get("context") == "response":
            return message, chat
        if message.get("context") == "user":
            chat.append(message)


def tcp_chat_until_end(client: LineClient) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        message = client.read_until(lambda m: isinstance(m, dict) and m.get("context") == "user")
        if message["message"] == END:
            return messages
        messages.append(message)


async def queue_chat_until_end(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        message = await asyncio.wait_for(queue.get(), 10)
        if message["message"] == END:
            return messages
        messages.append(message)


async def raw_chat_until_end(client: RawWebSocket) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        message = await client.next_chat(10)
        if message["message"] == END:
            return messages
        messages.append(message)


async def test_everyone_receives_each_message_exactly_once(
    web_node: NodeProcess, room: str
) -> None:
    tcp, tcp_id = await asyncio.to_thread(tcp_join, web_node.socket_port, room)
    raw = await RawWebSocket.open(web_node.web_port)
    python_tcp = SocketClient(LOOPBACK, web_node.socket_port, timeout=10)
    python_ws = WebSocketClient(f"ws://{LOOPBACK}:{web_node.web_port}/ws", timeout=10)
    try:
        assert await raw.receive() == WELCOME
        assert (await raw.request({"event": "roomAdd", "room": room}))["status"] == "OK"
        raw_id = (await raw.request({"event": "detailsView"}))["data"]["id"]
        ids = {"tcp": tcp_id, "raw-ws": raw_id}
        for name, client in (("python-socket", python_tcp), ("python-ws", python_ws)):
            await client.connect()
            await client.room_add(room)
            ids[name] = (await client.details_view())["id"]
        assert len(set(ids.values())) == 4
        members = await python_ws.room_view(room)
        assert set(members["members"]) == set(ids.values())

        # Each user speaks in turn; a say is answered once it reached every member, so
        # every member's stream holds the messages in this order.
        before = now_ms()
        tcp_reply, tcp_heard = await asyncio.to_thread(
            tcp_request_keeping_chat, tcp, f"say {room} hello from telnet"
        )
        assert tcp_reply["status"] == "OK"
        raw_reply = await raw.request(
            {"event": "say", "room": room, "message": "hello from a raw websocket"}
        )
        assert raw_reply["status"] == "OK"
        await python_tcp.say(room, "hello from the python socket client")
        await python_ws.say(room, "hello from the python websocket client")
        await python_ws.say(room, END)
        after = now_ms()

        expected = [
            ("hello from telnet", ids["tcp"]),
            ("hello from a raw websocket", ids["raw-ws"]),
            ("hello from the python socket client", ids["python-socket"]),
            ("hello from the python websocket client", ids["python-ws"]),
        ]
        received = {
            "tcp": tcp_heard + await asyncio.to_thread(tcp_chat_until_end, tcp),
            "raw-ws": await raw_chat_until_end(raw),
            "python-socket": await queue_chat_until_end(python_tcp.chat_messages),
            "python-ws": await queue_chat_until_end(python_ws.chat_messages),
        }
        for receiver, messages in received.items():
            assert [(m["message"], m["from"]) for m in messages] == expected, receiver
            for message in messages:
                assert set(message) == {"message", "room", "from", "context", "sentAt"}
                assert message["room"] == room
                assert message["context"] == "user"
                assert before - 1000 <= message["sentAt"] <= after + 1000
        # Everyone saw the very same messages, sentAt included.
        assert len({repr(messages) for messages in received.values()}) == 1
    finally:
        tcp.close()
        await raw.close()
        await python_tcp.disconnect()
        await python_ws.disconnect()


async def test_a_websocket_user_and_a_tcp_user_talk_both_ways(
    web_node: NodeProcess, room: str
) -> None:
    tcp, tcp_id = await asyncio.to_thread(tcp_join, web_node.socket_port, room)
    async with WebSocketClient(f"ws://{LOOPBACK}:{web_node.web_port}/ws") as ws:
        try:
            await ws.room_add(room)
            ws_id = (await ws.details_view())["id"]
            await asyncio.to_thread(tcp.request, f"say {room} ping from tcp")
            heard = await asyncio.wait_for(ws.chat_messages.get(), 5)
            assert (heard["message"], heard["from"]) == ("ping from tcp", tcp_id)

            await ws.say(room, "pong from websocket")
            answer = await asyncio.to_thread(
                tcp.read_until, lambda m: m.get("message") == "pong from websocket"
            )
            assert answer["from"] == ws_id and answer["room"] == room
        finally:
            tcp.close()
