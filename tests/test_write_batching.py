"""``[socket]`` and ``[web]`` ``write_delay``: a connection's output held up to the delay
and written at once.

End to end against real nodes: a raw TCP or WebSocket member records every ``recv()``
with its time, so a test sees which messages left in one write and how long each was
held. In process: the delayed outbox with a stand-in transport (slow consumers, closing,
buckets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fake_transport import FakeTransport, stream
from websupport import create_room, unique_room

from limits_support import masked_text_frame, node_with
from roomcast.servers.outbox import DelayedOutbox
from roomcast.testing import TestNode
from support import LOOPBACK, LineClient, NodeProcess

#: The delay of the batching node, in milliseconds: long, so that "sent within the delay"
#: holds on a loaded machine.
DELAY_MS = 800
DELAY = DELAY_MS / 1000
#: How much later than the delay a message may arrive (loop and machine scheduling).
LATE = 0.15
#: The gap between the says of the read-counting tests: 4 says span 3 gaps.
GAP = 0.08
TRANSPORTS = ("tcp", "ws")
UPGRADE = (
    f"GET /ws HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


@pytest.fixture(scope="module")
def batching_node() -> Iterator[NodeProcess]:
    settings = f"[socket]\nwrite_delay = {DELAY_MS}\n[web]\nwrite_delay = {DELAY_MS}\n"
    with node_with(settings) as node:
        yield node


@pytest.fixture(scope="module")
def plain_node() -> Iterator[NodeProcess]:
    with node_with() as node:
        yield node


class Member:
    """A raw TCP or WebSocket client whose reader thread records each ``recv()`` as it
    returns, so the times and the grouping are the wire's, not the test's."""

    def __init__(self, node: NodeProcess, transport: str) -> None:
        self.transport = transport
        port = node.socket_port if transport == "tcp" else node.web_port
        self.sock = socket.create_connection((LOOPBACK, port), timeout=5)
        self.sock.settimeout(None)  # the reader blocks; close() ends it
        self.buffer = b""
        #: (time of the recv, messages it completed), one entry per recv().
        self.reads: list[tuple[float, list[Any]]] = []
        self._chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if transport == "ws":
            self.sock.sendall(UPGRADE)
            while b"\r\n\r\n" not in self.buffer:
                self.buffer += self._next_chunk(5.0)[1]
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 "), head
        self.read_until(lambda m: "welcome" in m)

    def _read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            self._chunks.put((time.monotonic(), chunk))
            if not chunk:
                return

    def _next_chunk(self, timeout: float) -> tuple[float, bytes]:
        try:
            at, chunk = self._chunks.get(timeout=max(0.01, timeout))
        except queue.Empty:
            raise AssertionError(f"nothing more came; reads so far {self.reads!r}") from None
        if not chunk:
            raise ConnectionError("the node closed the connection")
        return at, chunk

    def send(self, verb: str, room: str, message: str | None = None) -> None:
        if self.transport == "tcp":
            line = f"{verb} {room}" if message is None else f"{verb} {room} {message}"
            self.sock.sendall(line.encode() + b"\n")
        else:
            event = {"event": verb, "room": room}
            if message is not None:
                event["message"] = message
            self.sock.sendall(masked_text_frame(json.dumps(event)))

    def join(self, room: str) -> None:
        self.send("roomAdd", room)
        reply = self.read_until(lambda m: m.get("context") == "response")
        assert reply.get("data") is True, reply
        self.reads.clear()

    def _take(self) -> list[Any]:
        """The complete messages in the buffer (a ping is answered and skipped)."""
        messages: list[Any] = []
        while True:
            if self.transport == "tcp":
                line, found, rest = self.buffer.partition(b"\r\n")
                if not found:
                    return messages
                self.buffer = rest
                messages.append(json.loads(line))
                continue
            if len(self.buffer) < 2:
                return messages
            first, size, start = self.buffer[0], self.buffer[1], 2
            if size == 126:
                if len(self.buffer) < 4:
                    return messages
                size, start = struct.unpack("!H", self.buffer[2:4])[0], 4
            if len(self.buffer) < start + size:
                return messages
            payload = self.buffer[start : start + size]
            self.buffer = self.buffer[start + size :]
            if first == 0x89:  # the node's heartbeat: answer it
                self.sock.sendall(masked_frame(0x8A, payload))
                continue
            assert first == 0x81, f"not a text frame: {first:#x}"
            messages.append(json.loads(payload))

    def read_until(self, predicate: Any, timeout: float = 5.0) -> Any:
        """Read until a message satisfies ``predicate``; every read is recorded."""
        deadline = time.monotonic() + timeout
        at, messages = time.monotonic(), self._take()  # left after the 101's head
        while True:
            if not messages:
                at, chunk = self._next_chunk(deadline - time.monotonic())
                self.buffer += chunk
                messages = self._take()
            self.reads.append((at, messages))
            for message in messages:
                if predicate(message):
                    return message
            messages = []

    def chat_reads(self, count: int) -> list[tuple[float, list[str]]]:
        """Read until ``count`` chat messages came since the join; each read that held
        any, with its time and their texts."""
        if self._chat_count() < count:
            self.read_until(lambda m: m.get("context") == "user" and self._chat_count() >= count)
        return [(at, chat_texts(ms)) for at, ms in self.reads if chat_texts(ms)]

    def _chat_count(self) -> int:
        return sum(len(chat_texts(messages)) for _, messages in self.reads)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(5)


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client's masked frame with FIN set; payloads under 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def chat_texts(messages: list[Any]) -> list[str]:
    return [m["message"] for m in messages if m.get("context") == "user"]


def room_of(node: NodeProcess, member_transport: str) -> tuple[str, Member, LineClient]:
    """A new room, a member of it over ``member_transport`` and a TCP sender in it."""
    room = unique_room("batch")
    create_room(node.web_port, room)
    member = Member(node, member_transport)
    member.join(room)
    sender = LineClient(node.socket_port)
    sender.send_line(f"roomAdd {room}")  # answered before its says, without waiting a delay
    return room, member, sender


def say_spaced(sender: LineClient, room: str, texts: list[str], gap: float) -> list[float]:
    """Say each text, ``gap`` seconds apart, without waiting for replies; the send times."""
    sent = []
    for index, text in enumerate(texts):
        if index:
            time.sleep(gap)
        sent.append(time.monotonic())
        sender.send_line(f"say {room} {text}")
    return sent


# messages combined ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_says_within_the_write_delay_reach_a_member_in_one_read(
    batching_node: NodeProcess, transport: str
) -> None:
    room, member, sender = room_of(batching_node, transport)
    try:
        texts = ["m1", "m2", "m3", "m4"]
        say_spaced(sender, room, texts, GAP)  # 0.24 s of says, within the 0.8 s delay
        assert [texts_of for _, texts_of in member.chat_reads(4)] == [texts]
    finally:
        member.close()
        sender.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_a_write_delay_spaced_says_reach_a_member_in_separate_reads(
    plain_node: NodeProcess, transport: str
) -> None:
    room, member, sender = room_of(plain_node, transport)
    try:
        texts = ["m1", "m2", "m3", "m4"]
        say_spaced(sender, room, texts, GAP)
        reads = member.chat_reads(4)
        assert [text for _, got in reads for text in got] == texts
        assert len(reads) > 1, reads  # one read only if the member slept through 0.24 s
    finally:
        member.close()
        sender.close()


# how long a message is held -------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_message_waits_longer_than_the_write_delay(
    batching_node: NodeProcess, transport: str
) -> None:
    """m1 opens the member's batch, m2 joins it 0.3 s later, m3 comes after the batch
    left and opens the next: each arrives within the delay of being sent (a delay that
    restarted with each frame would hold m1 for 1.1 s)."""
    room, member, sender = room_of(batching_node, transport)
    try:
        sent = say_spaced(sender, room, ["m1", "m2"], 0.3)
        member.chat_reads(2)
        sent += say_spaced(sender, room, ["m3"], 0)  # the member's batch has left
        reads = member.chat_reads(3)
        assert [got for _, got in reads] == [["m1", "m2"], ["m3"]], (reads, sent)
        arrived = [reads[0][0], reads[0][0], reads[1][0]]
        for text, at, start in zip(["m1", "m2", "m3"], arrived, sent, strict=True):
            assert at - start <= DELAY + LATE, f"{text} took {at - start:.3f} s"
        # held, not written at once: a batch waits for its delay (minus the bucket grain)
        assert arrived[0] - sent[0] >= DELAY * 0.9
        assert arrived[2] - sent[2] >= DELAY * 0.9
    finally:
        member.close()
        sender.close()


# order ----------------------------------------------------------------------------------


#: What a member sees after sending say a, roomView, say b, roomView in one go: each
#: chat message comes before the reply to its say (messageCount 1 was the roomAdd).
ORDER = [
    ("message", "a"),
    ("reply", 2),
    ("reply", 3),
    ("message", "b"),
    ("reply", 4),
    ("reply", 5),
]


def replies_and_messages(node: NodeProcess, transport: str) -> list[Any]:
    """The chat messages and replies a member gets for say, roomView, say, roomView sent
    in one go, in order."""
    room = unique_room("order")
    create_room(node.web_port, room)
    member = Member(node, transport)
    try:
        member.join(room)
        for verb, text in (("say", "a"), ("roomView", None), ("say", "b"), ("roomView", None)):
            member.send(verb, room, text)
        seen: list[Any] = []

        def record(message: Any) -> bool:
            if message.get("context") == "user":
                seen.append(("message", message["message"]))
            elif message.get("context") == "response":
                seen.append(("reply", message["messageCount"]))
            return len(seen) == len(ORDER)

        member.read_until(record)
        return seen
    finally:
        member.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_replies_and_chat_messages_keep_their_order_with_a_write_delay(
    batching_node: NodeProcess, plain_node: NodeProcess, transport: str
) -> None:
    assert replies_and_messages(plain_node, transport) == ORDER
    assert replies_and_messages(batching_node, transport) == ORDER


# the delayed outbox in process ----------------------------------------------------------


@pytest.fixture
async def node() -> AsyncIterator[TestNode]:
    async with TestNode() as running:
        yield running


async def test_held_frames_leave_in_one_write_after_the_delay(node: TestNode) -> None:
    transport = FakeTransport()
    connection = stream(node, transport, outbox=DelayedOutbox(0.05))
    connection.write_frame(b"a")
    await asyncio.sleep(0.01)
    connection.write_raw(b"b")
    assert transport.writes == []
    await asyncio.sleep(0.1)
    assert transport.writes == [b"ab"]


async def test_held_bytes_count_as_owed_against_the_send_limit(node: TestNode) -> None:
    outbox = DelayedOutbox(0.02)
    transport = FakeTransport(unsent=600)
    connection = stream(node, transport, limit=1000, outbox=outbox)
    for _ in range(5):
        connection.write_frame(b"x" * 100)  # 600 + 500 held > 1000
    await asyncio.sleep(0.08)
    assert transport.aborted
    assert transport.writes == []
    assert node.api.stats.slow_consumers_dropped == 1


async def test_held_bytes_under_the_send_limit_are_written(node: TestNode) -> None:
    transport = FakeTransport(unsent=400)
    connection = stream(node, transport, limit=1000, outbox=DelayedOutbox(0.02))
    for _ in range(5):
        connection.write_frame(b"x" * 100)  # 400 + 500 held <= 1000
    await asyncio.sleep(0.08)
    assert not transport.aborted
    assert transport.writes == [b"x" * 500]


async def test_closing_writes_what_is_held_at_once_and_later_frames_follow(
    node: TestNode,
) -> None:
    transport = FakeTransport()
    connection = stream(node, transport, outbox=DelayedOutbox(0.05))
    connection.write_frame(b"1")
    connection.write_frame(b"2")
    connection.close_transport()
    assert transport.writes == [b"12"]
    assert transport.closing
    connection.write_frame(b"3")  # after close: dropped, as without a delay
    await asyncio.sleep(0.1)
    assert transport.writes == [b"12"]


async def test_a_connection_whose_batch_opens_later_waits_its_own_delay(node: TestNode) -> None:
    """One bucket per grain, not one window for the node: a batch opened after the first
    one's bucket closed is not cut short."""
    outbox = DelayedOutbox(0.4)
    early, late = FakeTransport(), FakeTransport()
    stream(node, early, outbox=outbox).write_frame(b"e")
    await asyncio.sleep(0.2)
    stream(node, late, outbox=outbox).write_frame(b"l")
    await asyncio.sleep(0.25)  # 0.45 s after the first, 0.25 s after the second
    assert (early.writes, late.writes) == ([b"e"], [])
    await asyncio.sleep(0.3)
    assert late.writes == [b"l"]
