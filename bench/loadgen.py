"""Load-generator worker: one process holding many chat clients.

The controller (`run.py`) starts workers as `python loadgen.py '<json config>'`
and drives them with one JSON command per line on stdin; every command gets
exactly one JSON reply line on stdout. Commands:

- `{"cmd": "connect", "count": n, "concurrency": c, "timeout": s}`: open n
  connections, each joining the configured room; replies with how many
  joined, how many failed and the elapsed time. With `"rooms": [[room, ...], ...]`
  (one list per connection) each joins its own rooms instead (none: an empty list).
- `{"cmd": "send", "phase": p, "rate": r, "duration": d, "senders": s}`: the
  first s connections say chat messages at r messages/s in total for d
  seconds (at most r*d messages); replies when the last one is written. With
  `"random": true` each message comes from a membership (connection, room) picked
  at random among every connection's rooms.
- `{"cmd": "churn", "phase": p, "rate": r, "duration": d, "rooms": n, "says": k}`:
  join-say-leave cycles started at r per second for d seconds, each on an idle
  connection (in no room): `roomAdd` of a random room of `r0`..`r<n-1>`, k says
  there, `roomLeave`; one request at a time per connection. Replies once the
  cycles in flight are done (bounded) with how many joins and leaves succeeded
  and the latency histograms of `roomAdd` and `roomLeave` (request to reply).
- `{"cmd": "stats", "phase": p}`: deliveries received so far (all phases),
  the latency histogram of phase p's sampled deliveries, and this process's
  CPU time.
- `{"cmd": "stall", "count": k}`: stop reading on the last k connections (a
  stalled client whose kernel buffers fill up).
- `{"cmd": "resume"}`: read again on the stalled connections (a server that
  dropped one is noticed then).
- `{"cmd": "close"}`: close every connection and exit.

WebSocket clients use picows (a compiled client, so the generator costs far
less CPU per delivery than the servers under test); TCP clients use a plain
asyncio protocol. Each chat message carries `B|<phase>|<t_ns>|<sender>|<seq>|` (fixed widths)
padded with `x`; `t_ns` is CLOCK_MONOTONIC, shared by every process. Every
member counts its deliveries; one member in `sample_every` also parses the
timestamp into the latency histogram (keeps the generator cheap per delivery).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import random
import resource
import sys
import time

from picows import WSListener, WSMsgType, WSTransport, ws_connect

MONO = time.monotonic_ns
MARK = b"B|"
# Latency histogram: bucket i holds latencies in [1.02**i, 1.02**(i+1)) microseconds.
HIST_RATIO = 1.02
HIST_LOG = math.log(HIST_RATIO)
HIST_SIZE = 1200  # 1.02**1200 us is far beyond any run
INV_HIST_LOG = 1.0 / HIST_LOG
LOG = math.log


class PhaseStats:
    """Deliveries and latencies of one measured phase."""

    __slots__ = ("count", "hist", "max_ns", "sum_ns")

    def __init__(self) -> None:
        self.count = 0
        self.hist = [0] * HIST_SIZE
        self.max_ns = 0
        self.sum_ns = 0

    def as_dict(self) -> dict:
        return {
            "count": self.count,
            "hist": {str(i): n for i, n in enumerate(self.hist) if n},
            "max_ns": self.max_ns,
            "sum_ns": self.sum_ns,
        }


class Recorder:
    """Counts deliveries per phase; the hot path of the whole generator."""

    def __init__(self) -> None:
        self.phases: dict[int, PhaseStats] = {}
        self.other = 0  # deliveries we could not parse

    def record(self, data: bytes, now: int) -> None:
        # message layout: B|PPPP|TTTTTTTTTTTTTTTTTTT|... (fixed widths, see chat_message)
        i = data.find(MARK)
        try:
            phase = int(data[i + 2 : i + 6])
            sent = int(data[i + 7 : i + 26])
        except ValueError:
            self.other += 1
            return
        stats = self.phases.get(phase)
        if stats is None:
            stats = self.phases[phase] = PhaseStats()
        lat = now - sent
        stats.count += 1
        stats.sum_ns += lat
        if lat > stats.max_ns:
            stats.max_ns = lat
        idx = int(LOG(lat * 0.001) * INV_HIST_LOG) if lat > 1000 else 0
        stats.hist[idx if idx < HIST_SIZE else HIST_SIZE - 1] += 1


RECORDER = Recorder()


def chat_message(phase: int, sender: int, seq: int, size: int) -> str:
    body = f"B|{phase % 10000:04d}|{MONO():019d}|{sender % 10000:04d}|{seq % 10**7:07d}|"
    return body + "x" * (size - len(body)) if size > len(body) else body


# --- dialects: how each server under test spells join / say / heartbeats ---------------


class Dialect:
    """Client side of one chat protocol. Frames are bytes (text for WebSocket)."""

    transport = "ws"
    path = "/ws"

    def __init__(self, room: str, rooms: list[str] | None = None) -> None:
        self.room = room
        #: the rooms this connection joins on open (default: the configured room)
        self.rooms = [room] if rooms is None else rooms

    def open_frames(self) -> list[bytes]:
        """Frames to send as soon as the connection is open."""
        return [self.join_frame(room) for room in self.rooms]

    def join_frame(self, room: str) -> bytes:
        return b'{"event":"roomAdd","room":"%s"}' % room.encode()

    def leave_frame(self, room: str) -> bytes:
        return b'{"event":"roomLeave","room":"%s"}' % room.encode()

    def ready(self, data: bytes) -> bool:
        """Whether this frame tells a connection that joins no room that it is open."""
        return b'"welcome"' in data

    def control(self, data: bytes) -> tuple[str, bytes | list[bytes] | None]:
        """Classify a non-delivery frame: ("joined"|"failed"|"reply"|"other", frame to send)."""
        if b'"context":"response"' in data or b'"context": "response"' in data:
            try:
                status = json.loads(data).get("status")
            except ValueError:
                return "other", None
            return ("joined" if status == "OK" else "failed:" + str(status)), None
        return "other", None

    def say_frame(self, message: str, room: str | None = None) -> bytes:
        return b'{"event":"say","room":"%s","message":"%s"}' % (
            (room or self.room).encode(),
            message.encode(),
        )


class RoomcastWS(Dialect):
    pass


class ActionheroWS(Dialect):
    """ActionHero 29 websocket server: Primus with its JSON parser."""

    path = "/primus"

    def control(self, data: bytes) -> tuple[str, bytes | None]:
        if data.startswith(b'"primus::ping::'):
            return "other", b'"primus::pong::' + data[len(b'"primus::ping::') :]
        return super().control(data)


class SocketIO(Dialect):
    """Engine.IO 4 / Socket.IO 5 over a raw WebSocket."""

    path = "/socket.io/?EIO=4&transport=websocket"

    def __init__(self, room: str, rooms: list[str] | None = None) -> None:
        super().__init__(room, rooms)
        self.acks = 0
        #: say with an ack id (the churn cycle waits for it) or without (the fan-out)
        self.ack_says = False

    def open_frames(self) -> list[bytes]:
        return []  # wait for the Engine.IO open packet

    def _ack(self) -> bytes:
        self.acks += 1
        return b"42%d" % self.acks

    def join_frame(self, room: str) -> bytes:
        return self._ack() + b'["join",%s]' % json.dumps(room).encode()

    def leave_frame(self, room: str) -> bytes:
        return self._ack() + b'["leave",%s]' % json.dumps(room).encode()

    def ready(self, data: bytes) -> bool:
        return data.startswith(b"40")

    def control(self, data: bytes) -> tuple[str, bytes | None]:
        if data == b"2":
            return "other", b"3"
        if data.startswith(b"0{"):
            return "other", b"40"
        if data.startswith(b"40"):
            return "other", [self.join_frame(room) for room in self.rooms] or None
        if data.startswith(b"43"):
            try:
                status = json.loads(data[data.index(b"[") :])[0].get("status")
            except (ValueError, IndexError, AttributeError):
                status = None
            return ("joined" if status == "OK" else "failed:" + str(status)), None
        if data.startswith(b"44"):
            return "failed:" + data.decode(errors="replace"), None
        return "other", None

    def say_frame(self, message: str, room: str | None = None) -> bytes:
        head = self._ack() if self.ack_says else b"42"
        return head + b'["say",{"room":"%s","message":"%s"}]' % (
            (room or self.room).encode(),
            message.encode(),
        )


class RoomcastTCP(Dialect):
    transport = "tcp"

    def join_frame(self, room: str) -> bytes:
        return b"roomAdd %s\n" % room.encode()

    def leave_frame(self, room: str) -> bytes:
        return b"roomLeave %s\n" % room.encode()

    def say_frame(self, message: str, room: str | None = None) -> bytes:
        return b"say %s %s\n" % ((room or self.room).encode(), message.encode())


DIALECTS = {
    "roomcast-ws": RoomcastWS,
    "websockets": RoomcastWS,
    "actionhero": ActionheroWS,
    "socketio": SocketIO,
    "roomcast-tcp": RoomcastTCP,
}


# --- connections --------------------------------------------------------------------------


class Client:
    """State shared by both transports: join tracking and the delivery path."""

    dialect: Dialect

    def init_client(self, dialect: Dialect, sampled: bool) -> None:
        self.dialect = dialect
        self.joined: asyncio.Future = asyncio.get_running_loop().create_future()
        self.pending_joins = len(dialect.rooms)
        self.closed = False
        self.delivered = 0
        self.sampled = sampled
        #: set while a churn cycle runs: every reply goes to it (True when its status is OK)
        self.on_reply = None

    def handle(self, data: bytes) -> None:
        kind, out = self.dialect.control(data)
        if out is not None:
            if isinstance(out, list):
                for frame in out:
                    self.write(frame)
            else:
                self.write(out)
        if kind == "other":
            if not self.pending_joins and not self.joined.done() and self.dialect.ready(data):
                self.joined.set_result(True)
            return
        if self.on_reply is not None:
            self.on_reply(kind == "joined")
            return
        if not self.joined.done():
            if kind != "joined":
                self.joined.set_exception(RuntimeError(kind))
                return
            self.pending_joins -= 1
            if self.pending_joins <= 0:
                self.joined.set_result(True)

    def lost(self) -> None:
        self.closed = True
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("closed before joining"))

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        raise NotImplementedError

    def resume(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _shrink_rcvbuf(transport, size: int = 4096) -> None:
    """A stalled client: a small receive buffer, so the server's side fills up soon."""
    import socket

    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        if size > 4096 and hasattr(socket, "TCP_WINDOW_CLAMP"):
            # Linux keeps the window clamped to the small buffer unless told otherwise
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, size)


RESUME_RCVBUF = 4 << 20  # drain a stalled client's backlog quickly (capped by rmem_max)


TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE


class WSClient(WSListener, Client):
    def __init__(self, dialect: Dialect, sampled: bool) -> None:
        self.init_client(dialect, sampled)
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        for frame in self.dialect.open_frames():
            transport.send(TEXT, frame)

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        msg_type = frame.msg_type
        if msg_type is TEXT:
            data = frame.get_payload_as_bytes()
            if MARK in data:
                self.delivered += 1
                if self.sampled:
                    RECORDER.record(data, MONO())
            else:
                self.handle(data)
        elif msg_type is CLOSE:
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.lost()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.send(TEXT, data)

    def pause(self) -> None:
        if self.transport is not None:
            _shrink_rcvbuf(self.transport.underlying_transport)
            self.transport.underlying_transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            _shrink_rcvbuf(self.transport.underlying_transport, RESUME_RCVBUF)
            self.transport.underlying_transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.disconnect(graceful=False)


class TCPClient(asyncio.Protocol, Client):
    def __init__(self, dialect: Dialect, sampled: bool) -> None:
        self.init_client(dialect, sampled)
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        for frame in self.dialect.open_frames():
            transport.write(frame)

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        lines = data.split(b"\r\n")
        self.buffer = lines.pop()
        now = None
        for line in lines:
            if MARK in line:
                self.delivered += 1
                if self.sampled:
                    if now is None:
                        now = MONO()
                    RECORDER.record(line, now)
            elif line:
                self.handle(line)

    def connection_lost(self, exc) -> None:
        self.lost()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause(self) -> None:
        if self.transport is not None:
            _shrink_rcvbuf(self.transport)
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            _shrink_rcvbuf(self.transport, RESUME_RCVBUF)
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


class LeanWSClient(TCPClient):
    """A WebSocket client written straight on an asyncio protocol: one prebuilt upgrade
    request, the 101 checked by its status line, unmasked server frames parsed in place,
    client frames masked with the all-zero key (a valid key, so no XOR pass).

    It costs the generator far less per connection than picows's handshake, which is
    what the connections scenario measures (``--ws-client lean``)."""

    def __init__(self, dialect: Dialect, sampled: bool, request: bytes) -> None:
        super().__init__(dialect, sampled)
        self.request = request
        self.upgraded = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self.transport.abort()
                return
            self.upgraded = True
            data = data[end + 4 :]
            for frame in self.dialect.open_frames():
                self.write(frame)
        view = memoryview(data)
        at, size = 0, len(data)
        now = None
        while size - at >= 2:
            opcode = view[at] & 0x0F
            length = view[at + 1] & 0x7F
            head = 2
            if length == 126:
                if size - at < 4:
                    break
                length = int.from_bytes(view[at + 2 : at + 4], "big")
                head = 4
            elif length == 127:
                if size - at < 10:
                    break
                length = int.from_bytes(view[at + 2 : at + 10], "big")
                head = 10
            if size - at < head + length:
                break
            payload = bytes(view[at + head : at + head + length])
            at += head + length
            if opcode == 1:
                if MARK in payload:
                    self.delivered += 1
                    if self.sampled:
                        if now is None:
                            now = MONO()
                        RECORDER.record(payload, now)
                else:
                    self.handle(payload)
            elif opcode == 9:  # ping: pong with its payload
                self._send(0x8A, payload)
            elif opcode == 8:
                self.transport.close()
                return
        self.buffer = bytes(view[at:]) if at < size else b""

    def _send(self, first: int, data: bytes) -> None:
        n = len(data)
        if n < 126:
            head = bytes((first, 0x80 | n))
        elif n < 65536:
            head = bytes((first, 0xFE)) + n.to_bytes(2, "big")
        else:
            head = bytes((first, 0xFF)) + n.to_bytes(8, "big")
        self.transport.write(head + b"\0\0\0\0" + data)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self._send(0x81, data)


def upgrade_request(host: str, port: int, path: str) -> bytes:
    """The one upgrade request every lean client of a target sends (the key need not vary:
    the server only checks that it is 16 bytes in base64)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: cm9vbWNhc3QtYmVuY2gtMQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# --- the worker ---------------------------------------------------------------------------


# uvloop's C create_connection: connecting costs the generator about half as much CPU
# as picows's default (aiofastnet's Python connect path). BENCH_AIOFASTNET=1 restores it.
WS_CONNECT_OPTIONS: dict = {} if os.environ.get("BENCH_AIOFASTNET") else {"use_aiofastnet": False}


class Worker:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.kind = config["dialect"]
        self.hosts = config["targets"]  # list of [host, port]; connection i uses targets[i % len]
        self.room = config.get("room", "defaultRoom")
        self.size = int(config.get("message_size", 64))
        self.worker_id = int(config.get("worker_id", 0))
        self.sample_every = max(1, int(config.get("sample_every", 1)))
        self.clients: list[Client] = []
        self.stalled: list[Client] = []
        self.memberships: list[tuple[Client, str]] = []  # for random senders
        self.rng = random.Random(self.worker_id)
        #: "picows" (default) or "lean" (LeanWSClient) for WebSocket dialects
        self.ws_client = config.get("ws_client", "picows")

    async def open_one(self, index: int, timeout: float, rooms: list[str] | None = None) -> Client:
        host, port = self.hosts[index % len(self.hosts)]
        dialect = DIALECTS[self.kind](self.room, rooms)
        sampled = index % self.sample_every == 0
        loop = asyncio.get_running_loop()
        if dialect.transport == "tcp":
            _, client = await asyncio.wait_for(
                loop.create_connection(lambda: TCPClient(dialect, sampled), host, port), timeout
            )
        elif self.ws_client == "lean":
            request = upgrade_request(host, port, dialect.path)
            _, client = await asyncio.wait_for(
                loop.create_connection(lambda: LeanWSClient(dialect, sampled, request), host, port),
                timeout,
            )
        else:
            url = f"ws://{host}:{port}{dialect.path}"
            _, client = await ws_connect(
                lambda: WSClient(dialect, sampled),
                url,
                websocket_handshake_timeout=timeout,
                enable_auto_pong=True,
                **WS_CONNECT_OPTIONS,
            )
        try:
            await asyncio.wait_for(client.joined, timeout)
        except BaseException:
            client.close()
            raise
        return client

    async def connect(
        self,
        count: int,
        concurrency: int,
        timeout: float,
        deadline_s: float,
        rooms: list[list[str]] | None = None,
    ) -> dict:
        sem = asyncio.Semaphore(concurrency)
        errors: dict[str, int] = {}
        cpu0 = time.process_time()
        start = time.perf_counter()
        deadline = start + deadline_s
        base = len(self.clients)
        opened: list[Client | None] = [None] * count

        async def one(i: int) -> None:
            async with sem:
                if time.perf_counter() > deadline:
                    errors["deadline"] = errors.get("deadline", 0) + 1
                    return
                try:
                    opened[i] = await self.open_one(
                        base + i, timeout, rooms[i] if rooms is not None else None
                    )
                except BaseException as exc:
                    key = f"{type(exc).__name__}: {exc}"[:120]
                    errors[key] = errors.get(key, 0) + 1

        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - start
        ok = [c for c in opened if c is not None]
        self.clients.extend(ok)
        self.memberships.extend((c, room) for c in ok for room in c.dialect.rooms)
        return {
            "joined": len(ok),
            "failed": count - len(ok),
            "elapsed": elapsed,
            "cpu_s": time.process_time() - cpu0,
            "errors": errors,
            "total": len(self.clients),
        }

    async def send(
        self, phase: int, rate: float, duration: float, senders: int, random_senders: bool = False
    ) -> dict:
        if random_senders:
            return await self.send_random(phase, rate, duration)
        live = [c for c in self.clients[:senders] if not c.closed]
        if not live or rate <= 0:
            return {"sent": 0, "late_max_ms": 0.0}
        total = max(1, int(rate * duration))
        interval = 1.0 / rate
        start = time.perf_counter()
        sent = 0
        late_max = 0.0
        n = len(live)
        while sent < total:
            now = time.perf_counter()
            due = min(total, int((now - start) / interval) + 1)
            if due > sent:
                late_max = max(late_max, now - (start + sent * interval))
            while sent < due:
                client = live[sent % n]
                client.write(self.dialect_say(client, phase, sent))
                sent += 1
            if sent >= total:
                break
            next_at = start + sent * interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            if time.perf_counter() - start > duration * 3 + 5:
                break  # hard bound: never run far past the planned duration
        return {
            "sent": sent,
            "elapsed": time.perf_counter() - start,
            "late_max_ms": late_max * 1000,
        }

    async def paced(self, rate: float, duration: float, step) -> dict:
        """Call ``step(i)`` for i = 0, 1, ... at ``rate`` per second for ``duration`` s."""
        total = max(1, int(rate * duration))
        interval = 1.0 / rate
        start = time.perf_counter()
        done = 0
        late_max = 0.0
        while done < total:
            now = time.perf_counter()
            due = min(total, int((now - start) / interval) + 1)
            if due > done:
                late_max = max(late_max, now - (start + done * interval))
            while done < due:
                step(done)
                done += 1
            if done >= total:
                break
            delay = start + done * interval - time.perf_counter()
            await asyncio.sleep(delay if delay > 0 else 0)
            if time.perf_counter() - start > duration * 3 + 5:
                break  # hard bound: never run far past the planned duration
        elapsed = time.perf_counter() - start
        return {"sent": done, "elapsed": elapsed, "late_max_ms": late_max * 1000}

    async def send_random(self, phase: int, rate: float, duration: float) -> dict:
        live = [m for m in self.memberships if not m[0].closed]
        if not live or rate <= 0:
            return {"sent": 0, "late_max_ms": 0.0}
        pick = self.rng.choice
        size = self.size
        sender_base = self.worker_id * 1_000_000

        def step(seq: int) -> None:
            client, room = pick(live)
            message = chat_message(phase, sender_base + seq % 1000, seq, size)
            client.write(client.dialect.say_frame(message, room))

        return await self.paced(rate, duration, step)

    async def churn(self, phase: int, rate: float, duration: float, rooms: int, says: int) -> dict:
        """Join-say-leave cycles on idle connections; see the module docstring."""
        idle = collections.deque(c for c in self.clients if not c.closed and not c.dialect.rooms)
        join_stats, leave_stats = PhaseStats(), PhaseStats()
        counts = {"started": 0, "joins": 0, "leaves": 0, "says": 0, "failed": 0, "starved": 0}
        failures: dict[str, int] = {}
        in_flight = [0]
        size = self.size
        rng = self.rng
        for client in idle:
            if isinstance(client.dialect, SocketIO):
                client.dialect.ack_says = True

        def record(stats: PhaseStats, started: int) -> None:
            lat = MONO() - started
            stats.count += 1
            stats.sum_ns += lat
            if lat > stats.max_ns:
                stats.max_ns = lat
            idx = int(LOG(lat * 0.001) * INV_HIST_LOG) if lat > 1000 else 0
            stats.hist[idx if idx < HIST_SIZE else HIST_SIZE - 1] += 1

        def cycle(client: Client, room: str) -> None:
            state = {"step": "join", "says": 0, "t": MONO()}

            def finish(ok: bool, what: str) -> None:
                client.on_reply = None
                in_flight[0] -= 1
                if not ok:
                    counts["failed"] += 1
                    failures[what] = failures.get(what, 0) + 1
                if not client.closed:
                    idle.append(client)

            def on_reply(ok: bool) -> None:
                step = state["step"]
                if step == "join":
                    if not ok:
                        finish(False, "roomAdd refused")
                        return
                    record(join_stats, state["t"])
                    counts["joins"] += 1
                    state["step"] = "say" if says else "leave"
                elif step == "say":
                    if ok:
                        counts["says"] += 1
                    state["says"] += 1
                    if state["says"] < says:
                        client.write(client.dialect.say_frame(message(), room))
                        return
                    state["step"] = "leave"
                else:
                    if ok:
                        record(leave_stats, state["t"])
                        counts["leaves"] += 1
                    finish(ok, "roomLeave refused")
                    return
                if state["step"] == "say":
                    client.write(client.dialect.say_frame(message(), room))
                else:
                    state["t"] = MONO()
                    client.write(client.dialect.leave_frame(room))

            def message() -> str:
                return chat_message(phase, self.worker_id * 1_000_000, counts["says"], size)

            client.on_reply = on_reply
            in_flight[0] += 1
            counts["started"] += 1
            client.write(client.dialect.join_frame(room))

        def step(_: int) -> None:
            while idle and idle[0].closed:
                idle.popleft()
            if not idle:
                counts["starved"] += 1
                return
            client = idle.popleft()
            cycle(client, f"r{rng.randrange(rooms)}")

        cpu0 = time.process_time()
        paced = await self.paced(rate, duration, step)
        paced_s = paced.get("elapsed", duration)
        # let the cycles in flight finish (bounded): a cycle left hanging is a failure
        deadline = time.perf_counter() + 5.0
        while in_flight[0] > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        hanging = in_flight[0]
        for client in self.clients:
            if client.on_reply is not None:
                client.on_reply = None
                in_flight[0] -= 1
                if not client.closed:
                    idle.append(client)
        return {
            **counts,
            "hanging": hanging,
            "failures": failures,
            "join": join_stats.as_dict(),
            "leave": leave_stats.as_dict(),
            "seconds": paced_s,
            "late_max_ms": paced.get("late_max_ms", 0.0),
            "cpu_s": time.process_time() - cpu0,
        }

    def dialect_say(self, client: Client, phase: int, seq: int) -> bytes:
        sender = self.worker_id * 1_000_000 + seq % 1000
        return client.dialect.say_frame(chat_message(phase, sender, seq, self.size))

    def stats(self, phase: int) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats = RECORDER.phases.get(phase)
        return {
            "phase": phase,
            "stats": stats.as_dict() if stats else PhaseStats().as_dict(),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "user_s": usage.ru_utime,
            "unparsed": RECORDER.other,
            "delivered": sum(c.delivered for c in self.clients),
            "open": sum(1 for c in self.clients if not c.closed),
            "total": len(self.clients),
        }

    def stall(self, count: int) -> dict:
        victims = [c for c in self.clients if not c.closed][-count:] if count else []
        for c in victims:
            c.pause()
        self.stalled = victims
        return {"stalled": len(victims)}

    def resume(self) -> dict:
        for c in self.stalled:
            c.resume()
        return {"resumed": len(self.stalled)}

    def close(self) -> dict:
        for c in self.clients:
            c.close()
        return {"closed": len(self.clients)}

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)  # a connect command lists rooms
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        out = sys.stdout
        while True:
            line = await reader.readline()
            if not line:
                self.close()
                return
            cmd = json.loads(line)
            name = cmd.get("cmd")
            try:
                if name == "connect":
                    reply = await self.connect(
                        int(cmd["count"]),
                        int(cmd.get("concurrency", 100)),
                        float(cmd.get("timeout", 10)),
                        float(cmd.get("deadline", 120)),
                        cmd.get("rooms"),
                    )
                elif name == "send":
                    reply = await self.send(
                        int(cmd["phase"]),
                        float(cmd["rate"]),
                        float(cmd["duration"]),
                        int(cmd.get("senders", 1)),
                        bool(cmd.get("random", False)),
                    )
                elif name == "churn":
                    reply = await self.churn(
                        int(cmd["phase"]),
                        float(cmd["rate"]),
                        float(cmd["duration"]),
                        int(cmd["rooms"]),
                        int(cmd.get("says", 1)),
                    )
                elif name == "stats":
                    reply = self.stats(int(cmd["phase"]))
                elif name == "stall":
                    reply = self.stall(int(cmd["count"]))
                elif name == "resume":
                    reply = self.resume()
                elif name == "close":
                    reply = self.close()
                    out.write(json.dumps(reply) + "\n")
                    out.flush()
                    await asyncio.sleep(0.2)
                    return
                else:
                    reply = {"error": f"unknown command {name}"}
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    config = json.loads(sys.argv[1])
    raise_fd_limit()
    worker = Worker(config)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None and not os.environ.get("BENCH_NO_UVLOOP"):
        uvloop.run(worker.serve())
    else:
        asyncio.run(worker.serve())


if __name__ == "__main__":
    main()
