"""Naive `websockets` chat server: the plain-Python reference peer.

Speaks the subset of roomcast's WebSocket protocol (SPEC 4.2) that the
benchmark uses: a welcome on connect, `roomAdd` / `roomLeave` replies and
`say`, which fans the chat payload out to every member of the room. The
payload is encoded once per message and handed to `websockets.broadcast`,
the library's own fan-out helper (it frames the text once per connection).
Rooms are a dict of room name -> member set: `defaultRoom`, plus `r0`..`r<N-1>`
with `--rooms N` (the rooms and churn scenarios).

Usage: python peers/websockets_server.py --port 8080 [--bind 127.0.0.1] [--rooms N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

try:
    import orjson

    def dumps(obj: object) -> str:
        return orjson.dumps(obj).decode()

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is optional
    dumps = json.dumps
    loads = json.loads

from websockets.asyncio.server import broadcast, serve

WELCOME = dumps({"welcome": "Hello! Welcome to the roomcast api", "context": "api"})

rooms: dict[str, set] = {"defaultRoom": set()}


def reply(count: int, request: dict, status: str = "OK", data: object = True) -> str:
    out = {"status": status, "context": "response", "data": data, "messageCount": count}
    if "messageId" in request:
        out["messageId"] = request["messageId"]
    return dumps(out)


async def handler(ws) -> None:
    conn_id = str(id(ws))
    joined: set[str] = set()
    count = 0
    await ws.send(WELCOME)
    try:
        async for raw in ws:
            count += 1
            try:
                request = loads(raw)
                event = request.get("event")
            except Exception:
                await ws.send(reply(count, {}, "invalid JSON", False))
                continue
            room = request.get("room")
            if event == "say":
                members = rooms.get(room)
                if members is None or room not in joined:
                    await ws.send(
                        reply(count, request, f"connection not in this room ({room})", False)
                    )
                    continue
                await ws.send(reply(count, request))
                payload = dumps(
                    {
                        "message": request.get("message"),
                        "room": room,
                        "from": conn_id,
                        "context": "user",
                        "sentAt": int(time.time() * 1000),
                    }
                )
                broadcast(members, payload)
            elif event == "roomAdd":
                members = rooms.get(room)
                if members is None:
                    await ws.send(reply(count, request, "room does not exist", False))
                elif room in joined:
                    await ws.send(
                        reply(count, request, f"connection already in this room ({room})", False)
                    )
                else:
                    members.add(ws)
                    joined.add(room)
                    await ws.send(reply(count, request))
            elif event == "roomLeave":
                if room in joined:
                    rooms[room].discard(ws)
                    joined.discard(room)
                    await ws.send(reply(count, request))
                else:
                    await ws.send(
                        reply(count, request, f"connection not in this room ({room})", False)
                    )
            elif event == "quit":
                break
            else:
                await ws.send(reply(count, request, "unknown event", False))
    except Exception:
        pass
    finally:
        for room in joined:
            rooms[room].discard(ws)


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler, args.bind, args.port, compression=None, max_queue=None, ping_interval=None
    ):
        print(f"websockets peer ready on {args.bind}:{args.port}", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--rooms", type=int, default=0, help="also create rooms r0..r<N-1>")
    ns = parser.parse_args()
    rooms.update((f"r{i}", set()) for i in range(ns.rooms))
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None and not ns.no_uvloop:
        uvloop.run(main(ns))
    else:
        asyncio.run(main(ns))
