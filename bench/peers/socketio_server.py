"""python-socketio 5 chat server under uvicorn: a peer for the benchmark.

Events: `join` (room name) → ack `{"status": "OK"}`; `leave` (room name) → ack
`{"status": "OK"}`; `say` (`{"room", "message"}`) → emits `say` with roomcast's
chat payload shape to every member of the room, the sender included. With
`--redis-url`, rooms span processes through `AsyncRedisManager` (the two-node cluster
case).

Usage: python peers/socketio_server.py --port 8080 [--redis-url redis://...]
"""

from __future__ import annotations

import argparse
import time

import socketio
import uvicorn


def build_app(redis_url: str | None) -> object:
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )

    @sio.event
    async def join(sid, room):
        if room not in ("defaultRoom",) and not room:
            return {"status": "a room is required"}
        await sio.enter_room(sid, room)
        return {"status": "OK", "data": True}

    @sio.event
    async def leave(sid, room):
        await sio.leave_room(sid, room)
        return {"status": "OK", "data": True}

    @sio.event
    async def say(sid, data):
        room = data.get("room")
        payload = {
            "message": data.get("message"),
            "room": room,
            "from": sid,
            "context": "user",
            "sentAt": int(time.time() * 1000),
        }
        await sio.emit("say", payload, room=room)
        return {"status": "OK"}

    return socketio.ASGIApp(sio)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--redis-url", default=None)
    ns = parser.parse_args()
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    uvicorn.run(
        build_app(ns.redis_url),
        host=ns.bind,
        port=ns.port,
        loop=loop,
        ws="auto",
        log_level="warning",
        lifespan="off",
        ws_per_message_deflate=False,
    )
