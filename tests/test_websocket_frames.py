"""Server WebSocket frames, byte for byte: unmasked, FIN set, the shortest length."""

from __future__ import annotations

import zlib

import pytest

from roomcast.protocol import websocket_frames


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_a_text_frame_has_a_7_16_or_64_bit_length(size: int, header: bytes) -> None:
    payload = b"x" * size
    assert websocket_frames.text_frame(payload) == header + payload


def test_control_frames_fit_the_rfc_limits() -> None:
    assert websocket_frames.close_frame(1001) == b"\x88\x02\x03\xe9"
    assert websocket_frames.close_frame(1000, "done") == b"\x88\x06\x03\xe8done"
    assert websocket_frames.pong_frame(b"abc") == b"\x8a\x03abc"
    assert len(websocket_frames.pong_frame(b"p" * 200)) == 2 + 125
    assert len(websocket_frames.close_frame(1000, "x" * 500)) == 2 + 125
    assert websocket_frames.PING == b"\x89\x00"


def test_a_long_close_reason_is_never_cut_inside_a_character() -> None:
    frame = websocket_frames.close_frame(1000, "x" + "€" * 50)  # 151 bytes of UTF-8
    assert frame[:4] == b"\x88\x7b\x03\xe8"  # 2 + 121: a 41st euro sign would not fit
    assert frame[4:].decode() == "x" + "€" * 40


def test_a_deflated_text_frame_sets_rsv1_and_inflates_to_the_payload() -> None:
    payload = b'{"message":"hello hello hello","context":"user"}'
    frame = websocket_frames.deflate_text_frame(payload, 15)
    assert frame[0] == 0xC1  # FIN, RSV1, text
    assert frame[1] == len(frame) - 2
    inflated = zlib.decompressobj(-15).decompress(frame[2:] + b"\x00\x00\xff\xff")
    assert inflated == payload


def test_each_deflated_message_is_compressed_on_its_own() -> None:
    payload = b"the same message twice"
    assert websocket_frames.deflate(payload, 15) == websocket_frames.deflate(payload, 15)
