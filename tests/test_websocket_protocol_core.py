"""The sans-I/O WebSocket server protocol: client bytes in, events and server bytes out.

No sockets: every test feeds frames built here (masked, as a client must) and reads
what the protocol would write. Close frames are written out byte for byte.
"""

from __future__ import annotations

import os
import struct
import zlib

import pytest

from roomcast.protocol import websocket_frames
from roomcast.protocol.websocket import (
    BinaryMessage,
    Close,
    Event,
    Ping,
    Pong,
    ServerProtocol,
    State,
    TextMessage,
    unmask,
    valid_close_code,
)
from roomcast.protocol.websocket_handshake import DeflateParameters

MASK = b"\x37\xfa\x21\x3d"  # the mask of RFC 6455's examples
MAX_SIZE = 1 << 20


def client_frame(
    payload: bytes,
    opcode: int = 0x1,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    declared: int | None = None,
) -> bytes:
    """A client frame; ``declared`` overrides the length written in its header."""
    size = len(payload) if declared is None else declared
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def deflated(text: str) -> bytes:
    """``text`` as a client compresses a message: raw deflate, sync flush, tail removed."""
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(text.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def fed(data: bytes, **options: object) -> tuple[ServerProtocol, list[Event], bytes]:
    protocol = ServerProtocol(MAX_SIZE, **options)  # type: ignore[arg-type]
    protocol.receive_data(data)
    return protocol, protocol.events_received(), protocol.data_to_send()


# reading messages ------------------------------------------------------------------------


def test_the_rfc_example_masked_hello_is_a_text_message() -> None:
    protocol, events, sent = fed(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
    assert events == [TextMessage("Hello")]
    assert sent == b""
    assert protocol.state is State.OPEN


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 4097, 65539])
def test_unmask_is_the_xor_with_the_repeated_mask(size: int) -> None:
    data = os.urandom(size)
    assert unmask(MASK, data) == bytes(b ^ MASK[i % 4] for i, b in enumerate(data))


def test_a_binary_message_is_reported_as_bytes() -> None:
    _, events, _ = fed(client_frame(b"\x00\xff", opcode=0x2))
    assert events == [BinaryMessage(b"\x00\xff")]


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 300_000])
def test_payload_lengths_of_7_16_and_64_bits_are_read(size: int) -> None:
    text = "x" * size
    _, events, _ = fed(client_frame(text.encode()))
    assert events == [TextMessage(text)]


def test_a_fragmented_message_is_one_event_with_a_ping_in_between_answered() -> None:
    data = (
        client_frame(b"Hel", fin=False)
        + client_frame(b"beat", opcode=0x9)
        + client_frame(b"lo", opcode=0x0, fin=False)
        + client_frame(b"!", opcode=0x0)
    )
    _, events, sent = fed(data)
    assert events == [Ping(b"beat"), TextMessage("Hello!")]
    assert sent == b"\x8a\x04beat"


def test_a_character_split_across_fragments_is_valid_utf8() -> None:
    euro = "€".encode()  # three bytes
    data = client_frame(euro[:1], fin=False) + client_frame(euro[1:], opcode=0x0)
    _, events, _ = fed(data)
    assert events == [TextMessage("€")]


def test_a_ping_is_answered_with_a_pong_carrying_its_payload() -> None:
    _, events, sent = fed(client_frame(b"are you there", opcode=0x9))
    assert events == [Ping(b"are you there")]
    assert sent == b"\x8a\x0dare you there"


def test_a_pong_is_reported_and_not_answered() -> None:
    _, events, sent = fed(client_frame(b"alive", opcode=0xA))
    assert events == [Pong(b"alive")]
    assert sent == b""


def test_several_frames_in_one_read_are_all_reported_in_order() -> None:
    data = client_frame(b"one") + client_frame(b"two", opcode=0x2) + client_frame(b"three")
    _, events, _ = fed(data)
    assert events == [TextMessage("one"), BinaryMessage(b"two"), TextMessage("three")]


def test_a_stream_fed_one_byte_at_a_time_gives_the_same_events_and_output() -> None:
    data = (
        client_frame(b"first")
        + client_frame(b"p", opcode=0x9)
        + client_frame(b"y" * 300, fin=False)
        + client_frame(b"z" * 70_000, opcode=0x0)
        + client_frame(b"\x01\x02", opcode=0x2)
        + client_frame(close_payload(1000, b"bye"), opcode=0x8)
    )
    _, whole_events, whole_sent = fed(data)
    protocol = ServerProtocol(MAX_SIZE)
    events: list[Event] = []
    sent = b""
    for index in range(len(data)):
        protocol.receive_data(data[index : index + 1])
        events += protocol.events_received()
        sent += protocol.data_to_send()
    assert events == whole_events
    assert events == [
        TextMessage("first"),
        Ping(b"p"),
        TextMessage("y" * 300 + "z" * 70_000),
        BinaryMessage(b"\x01\x02"),
        Close(1000, "bye"),
    ]
    assert sent == whole_sent == b"\x8a\x01p" + b"\x88\x02\x03\xe8"


def test_a_frame_split_across_reads_is_kept_until_it_is_complete() -> None:
    data = client_frame(b"split in two")
    protocol = ServerProtocol(MAX_SIZE)
    protocol.receive_data(data[:7])
    assert protocol.events_received() == []
    protocol.receive_data(data[7:] + client_frame(b"next"))
    assert protocol.events_received() == [TextMessage("split in two"), TextMessage("next")]


# protocol errors: close 1002 -------------------------------------------------------------


def test_an_unmasked_frame_closes_with_1002() -> None:
    protocol, events, sent = fed(client_frame(b"hi", masked=False))
    assert events == []
    assert sent == b"\x88\x1e\x03\xea" + b"client frames must be masked"
    assert protocol.state is State.CLOSING
    assert protocol.close_sent == Close(1002, "client frames must be masked")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (client_frame(b"x", rsv=0x40), b"reserved bits must be 0"),  # RSV1, no extension
        (client_frame(b"x", rsv=0x20), b"reserved bits must be 0"),
        (client_frame(b"x", rsv=0x10), b"reserved bits must be 0"),
        (client_frame(b"x", opcode=0x3), b"unknown opcode 3"),
        (client_frame(b"x", opcode=0x7), b"unknown opcode 7"),
        (client_frame(b"x", opcode=0xB), b"unknown opcode 11"),
        (client_frame(b"x", opcode=0xF), b"unknown opcode 15"),
        (client_frame(b"p" * 126, opcode=0x9), b"a control frame's payload is at most 125 bytes"),
        (client_frame(b"p", opcode=0x9, fin=False), b"a control frame must not be fragmented"),
        (client_frame(b"x", opcode=0x0), b"a continuation frame without a message"),
        (
            client_frame(b"a", fin=False) + client_frame(b"b"),
            b"a new message before the last one ended",
        ),
        (client_frame(b"\x03", opcode=0x8), b"a close frame's code takes 2 bytes"),
    ],
)
def test_a_protocol_violation_closes_with_1002(frame: bytes, reason: bytes) -> None:
    protocol, events, sent = fed(frame)
    assert events == []
    assert sent == b"\x88" + bytes([2 + len(reason)]) + b"\x03\xea" + reason
    assert protocol.state is State.CLOSING


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_a_close_code_that_may_not_be_sent_closes_with_1002(code: int) -> None:
    _, events, sent = fed(client_frame(close_payload(code), opcode=0x8))
    reason = f"invalid close code {code}".encode()
    assert events == []
    assert sent == b"\x88" + bytes([2 + len(reason)]) + b"\x03\xea" + reason


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999])
def test_close_codes_a_client_may_send(code: int) -> None:
    assert valid_close_code(code)


def test_rsv1_on_a_continuation_frame_closes_with_1002_even_with_deflate() -> None:
    data = client_frame(deflated("ab"), fin=False, rsv=0x40) + client_frame(
        b"", opcode=0x0, rsv=0x40
    )
    _, events, sent = fed(data, deflate=DeflateParameters())
    assert events == []
    assert sent == b"\x88\x19\x03\xea" + b"reserved bits must be 0"


def test_rsv1_on_a_control_frame_closes_with_1002_even_with_deflate() -> None:
    _, _, sent = fed(client_frame(b"", opcode=0x9, rsv=0x40), deflate=DeflateParameters())
    assert sent == b"\x88\x19\x03\xea" + b"reserved bits must be 0"


# invalid data: close 1007 ----------------------------------------------------------------


def test_a_text_message_that_is_not_utf8_closes_with_1007() -> None:
    protocol, events, sent = fed(client_frame(b"\xff\xfe"))
    assert events == []
    assert sent == b"\x88\x1e\x03\xef" + b"a text message must be UTF-8"
    assert protocol.state is State.CLOSING


def test_utf8_is_checked_on_the_reassembled_message() -> None:
    data = client_frame("€".encode()[:2], fin=False) + client_frame(b"x", opcode=0x0)
    _, events, sent = fed(data)
    assert events == []
    assert sent == b"\x88\x1e\x03\xef" + b"a text message must be UTF-8"


def test_a_close_reason_that_is_not_utf8_closes_with_1007() -> None:
    _, events, sent = fed(client_frame(close_payload(1000, b"\xc3("), opcode=0x8))
    assert events == []
    assert sent == b"\x88\x1e\x03\xef" + b"a close reason must be UTF-8"


# too big: close 1009 ---------------------------------------------------------------------


def test_a_frame_declaring_more_than_max_size_closes_before_its_payload_arrives() -> None:
    header = client_frame(b"", declared=MAX_SIZE + 1)  # the header alone, with its mask
    protocol, events, sent = fed(header)
    assert events == []
    assert sent == b"\x88\x24\x03\xf1" + b"a message is at most 1048576 bytes"
    assert protocol.state is State.CLOSING


def test_a_frame_of_exactly_max_size_is_accepted() -> None:
    protocol = ServerProtocol(100)
    protocol.receive_data(client_frame(b"x" * 100))
    assert protocol.events_received() == [TextMessage("x" * 100)]


def test_fragments_adding_up_to_more_than_max_size_close_with_1009() -> None:
    protocol = ServerProtocol(100)
    protocol.receive_data(client_frame(b"x" * 60, fin=False))
    protocol.receive_data(client_frame(b"", opcode=0x0, fin=False, declared=41)[:8])
    assert protocol.data_to_send() == b"\x88\x20\x03\xf1" + b"a message is at most 100 bytes"


def test_a_close_is_a_control_frame_and_ignores_the_message_size() -> None:
    protocol = ServerProtocol(10)
    protocol.receive_data(client_frame(close_payload(1000, b"a longer reason"), opcode=0x8))
    assert protocol.events_received() == [Close(1000, "a longer reason")]


# closing ---------------------------------------------------------------------------------


def test_a_client_close_is_echoed_with_its_code_and_the_connection_is_closed() -> None:
    protocol, events, sent = fed(client_frame(close_payload(4001, b"done"), opcode=0x8))
    assert events == [Close(4001, "done")]
    assert sent == b"\x88\x02\x0f\xa1"
    assert protocol.state is State.CLOSED
    assert protocol.close_rcvd == Close(4001, "done")


def test_an_empty_close_is_answered_with_1000() -> None:
    protocol, events, sent = fed(client_frame(b"", opcode=0x8))
    assert events == [Close(1005, "")]
    assert sent == b"\x88\x02\x03\xe8"
    assert protocol.state is State.CLOSED


def test_nothing_after_a_close_is_parsed_or_answered() -> None:
    data = client_frame(b"", opcode=0x8) + client_frame(b"late") + client_frame(b"", opcode=0x9)
    protocol, events, sent = fed(data)
    assert events == [Close(1005, "")]
    assert sent == b"\x88\x02\x03\xe8"
    protocol.receive_data(client_frame(b"later", opcode=0x9))
    assert protocol.events_received() == []
    assert protocol.data_to_send() == b""


def test_nothing_after_a_protocol_error_is_parsed() -> None:
    protocol, _, _ = fed(client_frame(b"x", opcode=0x3) + client_frame(b"ping", opcode=0x9))
    protocol.receive_data(client_frame(b"more"))
    assert protocol.events_received() == []
    assert protocol.data_to_send() == b""


def test_send_close_writes_one_close_frame_and_stops_reading() -> None:
    protocol = ServerProtocol(MAX_SIZE)
    protocol.send_close(1001, "going away")
    protocol.send_close(1000)
    assert protocol.data_to_send() == b"\x88\x0c\x03\xe9going away"
    assert protocol.state is State.CLOSING
    protocol.receive_data(client_frame(b"hello"))
    assert protocol.events_received() == []


def test_receive_eof_closes() -> None:
    protocol = ServerProtocol(MAX_SIZE)
    protocol.receive_data(client_frame(b"half")[:4])
    protocol.receive_eof()
    assert protocol.state is State.CLOSED
    protocol.send_close(1000)
    assert protocol.data_to_send() == b""


# permessage-deflate ----------------------------------------------------------------------


def test_a_compressed_message_is_inflated() -> None:
    data = client_frame(deflated('{"event":"detailsView"}'), rsv=0x40)
    _, events, sent = fed(data, deflate=DeflateParameters())
    assert events == [TextMessage('{"event":"detailsView"}')]
    assert sent == b""


def test_a_fragmented_compressed_message_is_inflated_once_complete() -> None:
    payload = deflated("fragmented and compressed " * 10)
    data = client_frame(payload[:5], fin=False, rsv=0x40) + client_frame(payload[5:], opcode=0x0)
    _, events, _ = fed(data, deflate=DeflateParameters())
    assert events == [TextMessage("fragmented and compressed " * 10)]


def test_an_uncompressed_message_is_read_as_is_when_deflate_was_agreed() -> None:
    _, events, _ = fed(client_frame(b"plain"), deflate=DeflateParameters())
    assert events == [TextMessage("plain")]


def test_the_server_frame_round_trips_through_the_inflater() -> None:
    text = '{"message":"hi","room":"r","from":"x","context":"user","sentAt":1}'
    server_frame = websocket_frames.deflate_text_frame(text.encode(), 15)
    assert server_frame[0] == 0xC1  # FIN, RSV1, text
    payload = server_frame[2:]  # short enough for a 7-bit length
    _, events, _ = fed(client_frame(payload, rsv=0x40), deflate=DeflateParameters())
    assert events == [TextMessage(text)]


def test_with_context_takeover_the_client_window_carries_over_messages() -> None:
    compressor = zlib.compressobj(wbits=-15)
    frames = b""
    for text in ("repeat after me", "repeat after me"):
        data = compressor.compress(text.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
        frames += client_frame(data[:-4], rsv=0x40)
    deflate = DeflateParameters(client_no_context_takeover=False)
    _, events, _ = fed(frames, deflate=deflate)
    assert events == [TextMessage("repeat after me"), TextMessage("repeat after me")]


def test_a_message_inflating_past_max_size_closes_with_1009() -> None:
    bomb = deflated("0" * 200_000)  # a few hundred bytes on the wire
    protocol = ServerProtocol(100_000, DeflateParameters())
    protocol.receive_data(client_frame(bomb, rsv=0x40))
    assert len(bomb) < 1000
    assert protocol.events_received() == []
    assert protocol.data_to_send() == b"\x88\x23\x03\xf1" + b"a message is at most 100000 bytes"


def test_invalid_compressed_data_closes_with_1007() -> None:
    _, events, sent = fed(client_frame(b"\xff\xff\xff", rsv=0x40), deflate=DeflateParameters())
    assert events == []
    assert sent == b"\x88\x19\x03\xef" + b"invalid compressed data"
