"""The floor: the least a Python process can do per delivery over TCP.

Speaks the subset of roomcast's TCP line protocol the bench uses (welcome,
`roomAdd <room>`, `say <room> <message>`), with no asyncio and no framework:
a `selectors` loop, non-blocking sockets, and a `say` encoded once and written
with one `socket.send` per member. Its server CPU per delivery is what the
kernel's loopback TCP path plus one Python call cost: the figure roomcast's
TCP server can approach but not beat without sending fewer syscalls.

Usage: python peers/floor_server.py --port 5000
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import time

WELCOME = b'{"welcome":"Hello! Welcome to the roomcast api","context":"api"}\r\n'


class Conn:
    __slots__ = ("buf", "count", "id", "out", "rooms", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.out = b""  # bytes the kernel did not take yet
        self.count = 0
        self.rooms: set[str] = set()
        self.id = str(sock.fileno())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()

    sel = selectors.DefaultSelector()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.bind, args.port))
    listener.listen(1024)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    rooms: dict[str, dict[int, Conn]] = {"defaultRoom": {}}
    running = [True]

    def stop(*_: object) -> None:
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def send(c: Conn, data: bytes) -> None:
        if c.out:
            c.out += data
            return
        try:
            n = c.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            return
        if n < len(data):
            c.out = data[n:]
            sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def reply(c: Conn, status: str = "OK", data: object = True) -> None:
        send(
            c,
            json.dumps(
                {"status": status, "context": "response", "data": data, "messageCount": c.count},
                separators=(",", ":"),
            ).encode()
            + b"\r\n",
        )

    def drop(c: Conn) -> None:
        for r in c.rooms:
            rooms[r].pop(c.sock.fileno(), None)
        sel.unregister(c.sock)
        c.sock.close()

    def line(c: Conn, raw: bytes) -> None:
        c.count += 1
        verb, _, rest = raw.decode().partition(" ")
        if verb == "say":
            room, _, message = rest.partition(" ")
            members = rooms.get(room)
            if members is None or room not in c.rooms:
                reply(c, f"connection not in this room ({room})", False)
                return
            reply(c)
            payload = (
                json.dumps(
                    {
                        "message": message,
                        "room": room,
                        "from": c.id,
                        "context": "user",
                        "sentAt": int(time.time() * 1000),
                    },
                    separators=(",", ":"),
                ).encode()
                + b"\r\n"
            )
            for m in members.values():
                send(m, payload)
        elif verb == "roomAdd":
            if rest not in rooms:
                reply(c, "room does not exist", False)
            elif rest in c.rooms:
                reply(c, f"connection already in this room ({rest})", False)
            else:
                rooms[rest][c.sock.fileno()] = c
                c.rooms.add(rest)
                reply(c)
        elif verb in ("quit", "exit"):
            drop(c)
        else:
            reply(c, "unknown verb", False)

    print(f"floor peer ready on {args.bind}:{args.port}", flush=True)
    while running[0]:
        for key, events in sel.select(timeout=0.5):
            if key.data is None:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                c = Conn(sock)
                sel.register(sock, selectors.EVENT_READ, c)
                send(c, WELCOME)
                continue
            c = key.data
            if events & selectors.EVENT_WRITE and c.out:
                out, c.out = c.out, b""
                send(c, out)
                if not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
            if events & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    drop(c)
                    continue
                c.buf += data
                *lines, c.buf = c.buf.replace(b"\r", b"\n").split(b"\n")
                for raw in lines:
                    if raw:
                        line(c, raw)
    listener.close()


if __name__ == "__main__":
    main()
