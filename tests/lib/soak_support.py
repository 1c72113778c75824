"""The soak test's clients, all on one event loop: honest members (the project's TCP and
WebSocket clients) that record every chat message they hear, and the misbehaving kinds:
flooders over the say rate, members that stop reading (and a feeder filling their
buffers), and senders of garbage.

Honest messages read ``h <sender> <seq>``: ``sender`` names one connection (a member's
session), ``seq`` counts its says from 1. A :class:`Ledger` holds what was said, who was
in which room when, and what each session heard; :meth:`Ledger.problems` lists every
honest message lost, duplicated, out of order or unknown.

Times are ticks of one counter: every client runs on the same event loop, so the ticks
order what the clients did. A session's membership of a room runs from the tick after its
``roomAdd`` reply to the tick before it sent ``roomLeave`` (or its last says before
``quit``); a say is owed to it when it was sent after the first and answered before the
second (the node queues a say on every member before it answers the sayer).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import random
import socket
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from roomcast.client import SocketClient, WebSocketClient
from support import LOOPBACK

MIB = 1 << 20
FENCE_TIMEOUT = 15.0


@dataclass
class Said:
    room: str
    sender: str
    seq: int
    sent_at: int
    answered_at: float = math.inf  # never answered: owed to nobody


@dataclass
class Membership:
    receiver: str
    room: str
    joined_at: int
    left_at: float = math.inf


class Ledger:
    """What the honest sessions said, where they were members, and what they heard."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1)
        self.said: dict[tuple[str, str, int], Said] = {}
        self.memberships: list[Membership] = []
        #: receiver -> (room, sender, seq) in the order heard
        self.heard: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        self.errors: list[str] = []  # anything an honest client was refused
        self.ids: dict[str, str] = {}  # connection id -> session name

    def tick(self) -> int:
        return next(self._ticks)

    def hear(self, receiver: str, message: dict[str, Any]) -> tuple[str, int] | None:
        """Record a chat message heard by ``receiver``; its (sender, seq) when honest."""
        words = str(message.get("message", "")).split(" ")
        if len(words) != 3 or words[0] != "h" or not words[2].isdigit():
            return None  # a flooder's or a garbage sender's
        sender, seq = words[1], int(words[2])
        self.heard[receiver].append((str(message.get("room")), sender, seq))
        return sender, seq

    def problems(self) -> list[str]:
        found: list[str] = []
        for receiver, heard in self.heard.items():
            last: dict[tuple[str, str], int] = {}
            seen: set[tuple[str, str, int]] = set()
            for room, sender, seq in heard:
                if (room, sender, seq) not in self.said:
                    found.append(f"{receiver} heard {sender} {seq} in {room}, never said there")
                if (room, sender, seq) in seen:
                    found.append(f"{receiver} heard {sender} {seq} in {room} twice")
                elif seq < last.get((room, sender), 0):
                    found.append(f"{receiver} heard {sender} {seq} in {room} out of order")
                seen.add((room, sender, seq))
                last[(room, sender)] = max(seq, last.get((room, sender), 0))
        by_room: dict[str, list[Said]] = defaultdict(list)
        for said in self.said.values():
            by_room[said.room].append(said)
        heard_sets = {receiver: set(heard) for receiver, heard in self.heard.items()}
        for member in self.memberships:
            got = heard_sets.get(member.receiver, set())
            for said in by_room[member.room]:
                owed = member.joined_at < said.sent_at and said.answered_at < member.left_at
                if owed and (said.room, said.sender, said.seq) not in got:
                    found.append(
                        f"{member.receiver} never heard {said.sender} {said.seq} in {said.room}"
                        f" ({self._story(member, said)})"
                    )
        return found

    def _story(self, member: Membership, said: Said) -> str:
        """The ticks around a lost message, to tell what happened."""
        heard = [
            seq
            for room, sender, seq in self.heard.get(member.receiver, [])
            if (room, sender) == (said.room, said.sender)
        ]
        memberships = [
            (m.joined_at, m.left_at)
            for m in self.memberships
            if m.receiver == member.receiver and m.room == member.room
        ]
        return (
            f"said at {said.sent_at}, answered at {said.answered_at}; member {memberships};"
            f" heard from that sender there: {heard}; heard in all"
            f" {len(self.heard.get(member.receiver, []))}"
        )

    def owed_deliveries(self) -> int:
        """How many (message, receiver) deliveries the memberships owe in all."""
        by_room: dict[str, list[Said]] = defaultdict(list)
        for said in self.said.values():
            by_room[said.room].append(said)
        return sum(
            member.joined_at < said.sent_at and said.answered_at < member.left_at
            for member in self.memberships
            for said in by_room[member.room]
        )


# honest members -----------------------------------------------------------------------


class HonestSession:
    """One connection of an honest member: joins, leaves and says, recording each."""

    def __init__(self, name: str, client: SocketClient | WebSocketClient, ledger: Ledger) -> None:
        self.name = name
        self.client = client
        self.ledger = ledger
        self.joined: dict[str, Membership] = {}
        self.seq = 0
        self._own_heard: dict[str, int] = {}
        self._heard_own = asyncio.Event()
        client.on_say(self._heard)

    def _heard(self, message: dict[str, Any]) -> None:
        honest = self.ledger.hear(self.name, message)
        if honest is not None and honest[0] == self.name:
            self._own_heard[str(message.get("room"))] = honest[1]
            self._heard_own.set()

    async def join(self, room: str) -> None:
        try:
            await self.client.room_add(room)
        except Exception as error:
            self.ledger.errors.append(f"{self.name} roomAdd {room}: {error!r}")
            raise
        membership = Membership(self.name, room, self.ledger.tick())
        self.ledger.memberships.append(membership)
        self.joined[room] = membership

    async def leave(self, room: str) -> None:
        self.joined.pop(room).left_at = self.ledger.tick()
        try:
            await self.client.room_leave(room)
        except Exception as error:
            self.ledger.errors.append(f"{self.name} roomLeave {room}: {error!r}")
            raise

    async def say(self, room: str) -> int:
        self.seq += 1
        said = Said(room, self.name, self.seq, self.ledger.tick())
        self.ledger.said[(room, self.name, self.seq)] = said
        try:
            await self.client.say(room, f"h {self.name} {self.seq}")
        except Exception as error:
            self.ledger.errors.append(f"{self.name} say {room}: {error!r}")
            raise
        said.answered_at = self.ledger.tick()
        return self.seq

    async def fence(self) -> None:
        """Say once in every room joined and wait to hear each back: everything owed to
        this session in those rooms was queued before, so it has been heard too."""
        wanted = {room: await self.say(room) for room in list(self.joined)}
        async with asyncio.timeout(FENCE_TIMEOUT):
            while any(self._own_heard.get(room, 0) < seq for room, seq in wanted.items()):
                self._heard_own.clear()
                await self._heard_own.wait()

    async def close(self) -> None:
        # Owed from here on: only what was answered before this tick, so queued before
        # the fence's says; once they are heard, all that is owed has been too.
        for membership in self.joined.values():
            membership.left_at = self.ledger.tick()
        await self.fence()
        self.joined.clear()
        await self.client.disconnect()


async def open_session(
    name: str, websocket: bool, socket_port: int, web_port: int, ledger: Ledger
) -> HonestSession:
    client: SocketClient | WebSocketClient
    if websocket:
        client = WebSocketClient(f"ws://{LOOPBACK}:{web_port}/ws", reconnect=False)
    else:
        client = SocketClient(LOOPBACK, socket_port, reconnect=False)
    await client.connect()
    session = HonestSession(name, client, ledger)
    ledger.ids[str((await client.details_view())["id"])] = name
    return session


@dataclass
class HonestMember:
    """A member that connects, joins, chats, leaves and reconnects at random until
    ``until`` (loop time); one that ``keeps`` its last session leaves it open."""

    name: str
    websocket: bool
    rooms: list[str]
    rng: random.Random
    kept: HonestSession | None = None
    sessions: int = 0

    async def run(
        self, socket_port: int, web_port: int, ledger: Ledger, until: float, keep: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            self.sessions += 1
            name = f"{self.name}.{self.sessions}"
            try:
                session = await open_session(name, self.websocket, socket_port, web_port, ledger)
            except Exception as error:
                ledger.errors.append(f"{name} connecting: {error!r}")
                return
            try:
                for _ in range(self.rng.randint(3, 15)):
                    if loop.time() >= until:
                        break
                    await self.step(session)
                    await asyncio.sleep(self.rng.uniform(0.15, 0.9))
                if keep and loop.time() >= until:
                    if not session.joined:
                        await session.join(self.rng.choice(self.rooms))
                    await session.fence()
                    self.kept = session
                    return
                await session.close()
            except Exception as error:
                ledger.errors.append(f"{name}: {error!r}")
                await session.client.disconnect()
                return
        if keep:  # the last session ended just as the traffic stopped: one more, kept
            self.sessions += 1
            name = f"{self.name}.{self.sessions}"
            session = await open_session(name, self.websocket, socket_port, web_port, ledger)
            await session.join(self.rng.choice(self.rooms))
            await session.fence()
            self.kept = session

    async def step(self, session: HonestSession) -> None:
        choice = self.rng.random()
        outside = [room for room in self.rooms if room not in session.joined]
        if not session.joined or (choice < 0.12 and len(session.joined) < 3):
            await session.join(self.rng.choice(outside))
        elif choice < 0.2:
            await session.leave(self.rng.choice(list(session.joined)))
        else:
            await session.say(self.rng.choice(list(session.joined)))


# misbehaving clients ------------------------------------------------------------------


@dataclass
class Misbehaviour:
    """What the misbehaving clients did and what they were answered."""

    too_fast: int = 0
    flood_ok: int = 0
    stalled: int = 0
    garbage_sent: int = 0
    garbage_answered: int = 0
    closes: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    wrong: list[str] = field(default_factory=list)  # answers that were not the expected


async def _joined_line_client(
    port: int, room: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=16 << 20)
    await reader.readline()  # the welcome
    writer.write(f"roomAdd {room}\n".encode())
    while b'"context":"response"' not in (line := await reader.readline()):
        if not line:
            raise ConnectionError("closed while joining")
    assert b'"status":"OK"' in line, line
    return reader, writer


async def flooder(port: int, room: str, until: float, seen: Misbehaviour) -> None:
    """Pipelines bursts of 500 short says into ``room`` (one write each, reading every
    answer, a second apart): past the say rate's burst of 200, so most are answered too
    fast whatever the node's speed."""
    reader, writer = await _joined_line_client(port, room)
    burst = f"say {room} flood\n".encode() * 500
    loop = asyncio.get_running_loop()
    try:
        while loop.time() < until:
            writer.write(burst)
            answered = 0
            while answered < 500:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("the node closed a flooder")
                if b'"context":"response"' in line:
                    answered += 1
                    if b"you are sending too fast" in line:
                        seen.too_fast += 1
                    elif b'"status":"OK"' in line:
                        seen.flood_ok += 1
            await asyncio.sleep(1.0)
    finally:
        writer.close()


async def feeder(port: int, room: str, until: float) -> None:
    """Says 8 KB into ``room`` 50 times a second (under the say rate), reading all it is
    sent: what fills the buffers of the members that stop reading. Dropped itself (on a
    machine too busy to read in time), it joins again."""
    loop = asyncio.get_running_loop()
    line = f"say {room} feed{'x' * 8000}\n".encode()
    while loop.time() < until:
        reader, writer = await _joined_line_client(port, room)

        async def read(reader: asyncio.StreamReader = reader) -> None:
            while await reader.read(1 << 20):
                pass

        reading = asyncio.ensure_future(read())
        try:
            next_say = loop.time()
            while loop.time() < until:
                writer.write(line)
                await writer.drain()
                next_say += 1 / 50
                await asyncio.sleep(max(0.0, next_say - loop.time()))
        except ConnectionError:
            pass
        finally:
            writer.close()
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await reading


def upgrade_head() -> bytes:
    return (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


def client_frame(payload: bytes, *, masked: bool = True, opcode: int = 0x1) -> bytes:
    """A client's WebSocket frame (masked unless told otherwise)."""
    head = bytes([0x80 | opcode])
    bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def staller(
    address: tuple[int, bool], room: str, rng: random.Random, until: float, seen: Misbehaviour
) -> None:
    """Joins ``room`` (over TCP, or WebSocket when ``address[1]``) and never reads again;
    after 4 to 10 s it drops the socket unread and starts over."""
    port, websocket = address
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (LOOPBACK, port))
            if websocket:
                join = b'{"event":"roomAdd","room":"%s"}' % room.encode()
                await loop.sock_sendall(sock, upgrade_head() + client_frame(join))
            else:
                await loop.sock_sendall(sock, f"roomAdd {room}\n".encode())
            seen.stalled += 1
            await asyncio.sleep(min(rng.uniform(4.0, 10.0), max(0.0, until - loop.time())))
        finally:
            sock.close()


#: A TCP line and what its reply's error must contain.
LINE_GARBAGE: list[tuple[bytes, str]] = [
    (b"say spam-0 \xc3\x28 broken\n", "request is not valid UTF-8"),
    (b"{broken json\n", "invalid JSON request"),
    (b"[1,2,3]\n", "a JSON request must be an object"),
    (b"nonsense verb here\n", "unknown action or invalid apiVersion"),
    (b"\x00\x00\x00\n", "unknown action or invalid apiVersion"),
    (b"roomAdd bad\x01name\n", "invalid room name"),
    (b'{"action":"status","params":"x"}\n', "params must be a JSON object"),
    (b"b" * (MIB + 10) + b"\n", f"data length is too big ({MIB + 10} received/{MIB} max)"),
]

#: A WebSocket frame and how the node must answer it: an error reply (None) or a close
#: frame with this code.
FRAME_GARBAGE: list[tuple[bytes, int | None]] = [
    (client_frame(b"not json at all"), None),
    (client_frame(b'{"event":"nonsense"}'), None),
    (client_frame(b"[1,2,3]"), None),
    (client_frame(b'{"event":"detailsView"}', masked=False), 1002),
    (client_frame(b"\xff\xfe"), 1007),
    (b"\x81\xff" + struct.pack("!Q", 2 << 20) + b"\x01\x02\x03\x04", 1009),
]


def _is_details(reply: bytes) -> bool:
    return reply.startswith(b'{"status":"OK","context":"response","data":{"id":')


async def garbage_over_tcp(port: int, rng: random.Random, seen: Misbehaviour) -> None:
    """One connection sending a few garbage lines; each must get its error, and a
    ``detailsView`` after them an OK."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=16 << 20)
    try:
        await reader.readline()  # the welcome
        for _ in range(rng.randint(1, 4)):
            line, expected = rng.choice(LINE_GARBAGE[:-1] if rng.random() < 0.9 else LINE_GARBAGE)
            writer.write(line + b"detailsView\n")
            seen.garbage_sent += 1
            # An action's reply (an unknown action is one) may come after a later verb's.
            answers = sorted([await reader.readline(), await reader.readline()], key=_is_details)
            if expected not in answers[0].decode(errors="replace") or not _is_details(answers[1]):
                seen.wrong.append(f"{line[:40]!r} answered {answers!r:.400}")
                return
            seen.garbage_answered += 1
            await asyncio.sleep(rng.uniform(0.05, 0.3))
    finally:
        writer.close()


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next server frame that is not a ping: its opcode and payload."""
    while True:
        head = await reader.readexactly(2)
        size = head[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(size)
        if head[0] & 0x0F != 0x9:
            return head[0] & 0x0F, payload


async def garbage_over_websocket(port: int, rng: random.Random, seen: Misbehaviour) -> None:
    """One WebSocket sending garbage frames until one closes it: an error reply to
    each bad message, a close frame with the right code to each bad frame."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(upgrade_head())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        await _read_frame(reader)  # the welcome
        for _ in range(rng.randint(1, 4)):
            frame, close_code = rng.choice(FRAME_GARBAGE)
            writer.write(frame)
            seen.garbage_sent += 1
            opcode, payload = await _read_frame(reader)
            if close_code is None:
                if opcode != 0x1 or b'"error"' not in payload:
                    seen.wrong.append(f"frame {frame[:20]!r} answered {opcode} {payload[:200]!r}")
                    return
            else:
                code = struct.unpack("!H", payload[:2])[0] if opcode == 0x8 else None
                if code != close_code:
                    seen.wrong.append(f"frame {frame[:20]!r} answered {opcode} {payload[:200]!r}")
                    return
                seen.closes[code] += 1
                seen.garbage_answered += 1
                return
            seen.garbage_answered += 1
            await asyncio.sleep(rng.uniform(0.05, 0.3))
    finally:
        writer.close()


async def garbage_sender(
    ports: tuple[int, int], rng: random.Random, until: float, seen: Misbehaviour
) -> None:
    """Garbage connections one after another, TCP or WebSocket at random, until ``until``."""
    socket_port, web_port = ports
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        try:
            if rng.random() < 0.5:
                await garbage_over_tcp(socket_port, rng, seen)
            else:
                await garbage_over_websocket(web_port, rng, seen)
        except (OSError, asyncio.IncompleteReadError) as error:
            seen.wrong.append(f"garbage connection failed: {error!r}")
        await asyncio.sleep(rng.uniform(0.1, 0.5))
