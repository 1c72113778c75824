"""A room of TCP members and one member flooding it with pipelined says, as a process of
its own (so that reading 500 sockets does not slow the test's measuring client down).

    python flood_room.py PORT ROOM MEMBERS SECONDS MAX_SAYS

Prints ``ready`` once every member has joined, floods when it reads ``go`` on stdin,
then prints one JSON line of counts and exits when stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import sys
import time

LOOPBACK = "127.0.0.1"
#: Says sent but not yet answered, at most: thousands in flight, never a backlog of
#: minutes in the kernel's buffers.
MAX_UNANSWERED = 3000


def joined(port: int, room: str) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=10)
    sock.sendall(f"roomAdd {room}\n".encode())
    received = b""
    while b'"context":"response"' not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed while joining")
        received += chunk
    if b'"status":"OK"' not in received:
        raise RuntimeError(f"join refused: {received!r}")
    sock.setblocking(False)
    return sock


def drain(sockets: list[socket.socket]) -> int:
    """Read what waits on every member socket; return how many the node has closed."""
    closed = 0
    for sock in sockets:
        try:
            while sock.recv(1 << 20):
                pass
            closed += 1  # recv returned b"": closed by the node
        except BlockingIOError:
            pass
    return closed


def main() -> None:
    port, room = int(sys.argv[1]), sys.argv[2]
    members, seconds, max_says = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    sockets = [joined(port, room) for _ in range(members)]
    flooder = joined(port, room)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    selector = selectors.DefaultSelector()
    selector.register(flooder, selectors.EVENT_READ)
    interest = selectors.EVENT_READ
    batch = f"say {room} flood-message-of-some-forty-bytes-long\n".encode() * 100
    pending, sent, answered, too_fast = b"", 0, 0, 0
    partial = b""
    started = time.monotonic()
    deadline = started + seconds
    last_answer = started
    next_drain = started
    sending = True
    quiet_until = 0.0
    while True:
        now = time.monotonic()
        if sending and (now > deadline or sent >= max_says):
            sending = False
            sent -= pending.count(b"\n")  # never sent whole: never answered
            pending = b""
            quiet_until = now + 20
        if not sending and (answered >= sent or now > quiet_until):
            break
        if sending and not pending and sent - answered < MAX_UNANSWERED:
            pending = batch
            sent += 100
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0)
        if wanted != interest:
            selector.modify(flooder, wanted)
            interest = wanted
        for _, events in selector.select(0.02):
            if events & selectors.EVENT_WRITE:
                with contextlib.suppress(BlockingIOError):
                    pending = pending[flooder.send(pending) :]
            if events & selectors.EVENT_READ:
                try:
                    chunk = flooder.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise ConnectionError("the node closed the flooder")
                lines = (partial + chunk).split(b"\r\n")
                partial = lines.pop()
                for line in lines:
                    if b'"context":"response"' in line:
                        answered += 1
                        last_answer = time.monotonic()
                        too_fast += b"sending too fast" in line
        if now >= next_drain:  # members read in passes: cheap here, slow readers there
            drain(sockets)
            next_drain = now + 0.1
    closed = drain(sockets)
    ok = answered - too_fast
    print(
        json.dumps(
            {
                "sent": sent,
                "answered": answered,
                "ok": ok,
                "too_fast": too_fast,
                "closed": closed,
                "seconds": round(last_answer - started, 3),
            }
        ),
        flush=True,
    )
    sys.stdin.read()


if __name__ == "__main__":
    main()
