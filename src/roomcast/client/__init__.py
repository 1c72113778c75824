"""Async Python clients for roomcast's socket and WebSocket protocols.

They reconnect by themselves after an unexpected drop (with backoff), fail over among
several servers, re-join their rooms and, in rooms with history, resume from the last
message seen::

    async with WebSocketClient(["ws://a:8080/ws", "ws://b:8080/ws"]) as client:
        client.on_say(lambda message: print(message["from"], message["message"]))
        client.on_unrecovered(lambda room, count: print("missed messages in", room))
        await client.room_add("defaultRoom")
        await client.say("defaultRoom", "hello")
"""

from roomcast.client.backoff import Backoff
from roomcast.client.base import ClientConnectionError, ClientError, ClientState
from roomcast.client.events import Disconnected, Reconnected
from roomcast.client.positions import Position, RoomPositions
from roomcast.client.socket import SocketClient
from roomcast.client.websocket import WebSocketClient

__all__ = [
    "Backoff",
    "ClientConnectionError",
    "ClientError",
    "ClientState",
    "Disconnected",
    "Position",
    "Reconnected",
    "RoomPositions",
    "SocketClient",
    "WebSocketClient",
]
