"""What permessage-deflate costs the server: CPU per chat delivery, compression off vs on.

    python bench/deflate_cost.py [--members 500] [--messages 400] [--rounds 3]

For each mode a fresh ``roomcast start`` process (``[web] compress`` off, or on with
every client offering ``permessage-deflate``) gets ``--members`` raw WebSocket clients
in one room; one of them says ``--messages`` chat messages (~64 bytes of text), paced
in small bursts. The server's CPU time (nanosecond schedstat of its threads) from the
first say to the last delivery, divided by the deliveries, is the figure; the modes
alternate ``--rounds`` times so a busy machine disturbs both alike. Clients only count
frames (they never inflate), so they stay cheap. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
OFFER = "permessage-deflate; client_max_window_bits"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            continue
    return total / 1e9


def masked_text(value: object) -> bytes:
    payload = json.dumps(value).encode()
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([0x81, 0x80 | size]) if size < 126 else b"\x81\xfe" + struct.pack("!H", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Member:
    """A raw client that counts the text frames it receives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = 0
        self.compressed = 0

    @classmethod
    async def connect(cls, port: int, deflate: bool) -> Member:
        reader, writer = await asyncio.open_connection(HOST, port)
        key = base64.b64encode(os.urandom(16)).decode()
        offer = f"Sec-WebSocket-Extensions: {OFFER}\r\n" if deflate else ""
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        assert (b"permessage-deflate" in head) == deflate, head
        return cls(reader, writer)

    async def read_frame(self) -> None:
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        await self.reader.readexactly(size)
        if first & 0x0F == 1:
            self.frames += 1
            self.compressed += bool(first & 0x40)

    async def read_forever(self) -> None:
        try:
            while True:
                await self.read_frame()
        except (asyncio.IncompleteReadError, ConnectionError):
            return


async def measure(compress: bool, members: int, messages: int) -> tuple[float, float]:
    """Server µs per delivery and the share of deliveries that arrived compressed."""
    tmp = Path(tempfile.mkdtemp(prefix="roomcast-deflate-"))
    config = tmp / "roomcast.toml"
    config.write_text(f"[web]\ncompress = {'true' if compress else 'false'}\nheartbeat = 0\n")
    web_port, socket_port = free_port(), free_port()
    log = (tmp / "node.log").open("wb")
    command = [sys.executable, "-m", "roomcast", "start", "--bind", HOST, "--config", str(config)]
    node = subprocess.Popen(
        [*command, "--web-port", str(web_port), "--socket-port", str(socket_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((HOST, web_port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        room = f"deflate-{os.getpid()}"
        urllib.request.urlopen(f"http://{HOST}:{web_port}/api/createChatRoom?name={room}").read()
        clients = []
        for _ in range(members):
            client = await Member.connect(web_port, compress)
            await client.read_frame()  # welcome
            client.writer.write(masked_text({"event": "roomAdd", "room": room}))
            await client.read_frame()  # its reply
            clients.append(client)
        readers = [asyncio.create_task(c.read_forever()) for c in clients]
        for c in clients:
            c.frames = c.compressed = 0
        sender = clients[0]
        expected = messages * members + messages  # every member, plus the sender's replies
        started = cpu_seconds(node.pid)
        for index in range(messages):
            text = f"B|{index}|{time.monotonic_ns()}|sender|{index}|".ljust(64, "x")
            sender.writer.write(masked_text({"event": "say", "room": room, "message": text}))
            if index % 10 == 9:
                await asyncio.sleep(0.005)
        deadline = time.monotonic() + 60
        while sum(c.frames for c in clients) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sum(c.frames for c in clients)}/{expected} frames")
            await asyncio.sleep(0.01)
        used = cpu_seconds(node.pid) - started
        compressed = sum(c.compressed for c in clients) / expected
        for task in readers:
            task.cancel()
        for c in clients:
            c.writer.close()
        return used / (messages * members) * 1e6, compressed
    finally:
        node.terminate()
        node.wait(15)
        log.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for compress in (False, True):
            per_delivery, share = await measure(compress, args.members, args.messages)
            results[compress].append(per_delivery)
            print(
                f"compress={compress!s:5}  {per_delivery:6.2f} µs/delivery  compressed {share:.0%}"
            )
    off, on = (statistics.median(results[mode]) for mode in (False, True))
    print(f"median: off {off:.2f} µs, on {on:.2f} µs per delivery ({on / off - 1:+.0%})")


if __name__ == "__main__":
    asyncio.run(main())
