"""Async Python clients for roomcast's socket and WebSocket protocols.

async with WebSocketClient("ws://127.0.0.1:8080/ws") as client:
    client.on_say(lambda message: print(message["from"], message["message"]))
    await client.room_add("defaultRoom")
    await client.say("defaultRoom", "hello")
"""

from roomcast.client.base import ClientError
from roomcast.client.socket import SocketClient
from roomcast.client.websocket import WebSocketClient

__all__ = ["ClientError", "SocketClient", "WebSocketClient"]
