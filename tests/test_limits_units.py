"""The pure pieces of the per-request limits: room names, token buckets, encoded sizes,
param checks, a connection's joined rooms, and the cost of cutting TCP lines."""

from __future__ import annotations

import json
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast import jsonwire
from roomcast.chat.errors import (
    InvalidRoomName,
    MessageTooLong,
    RoomLimitReached,
    RoomRequired,
    TooManyRooms,
    error_from_wire,
)
from roomcast.chat.names import validate_room_name
from roomcast.connection import JoinedRooms
from roomcast.limits import TokenBucket, encoded_size_over, encoded_str_size, params_error
from roomcast.protocol.socket_lines import Line, LineSplitter, TooLong

# room names -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lobby", "a", "é" * 127 + "a", "x" * 255, "日本語 room", "🙂"])
def test_room_names_within_the_limit_and_without_control_characters_are_accepted(name: str) -> None:
    validate_room_name(name, 255)


def test_an_empty_room_name_is_still_a_room_is_required() -> None:
    with pytest.raises(RoomRequired, match=r"^a room is required$"):
        validate_room_name("", 255)


@pytest.mark.parametrize(
    "name",
    ["x" * 256, "é" * 128, "🙂" * 64],
    ids=["256 ASCII bytes", "256 bytes of two-byte characters", "256 bytes of emoji"],
)
def test_a_room_name_over_the_limit_in_utf8_bytes_is_invalid(name: str) -> None:
    with pytest.raises(InvalidRoomName, match=r"^invalid room name$"):
        validate_room_name(name, 255)


@pytest.mark.parametrize("char", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f"])
def test_a_room_name_with_a_control_character_is_invalid(char: str) -> None:
    with pytest.raises(InvalidRoomName):
        validate_room_name(f"a{char}b", 255)


def test_a_room_name_with_a_lone_surrogate_is_invalid() -> None:
    with pytest.raises(InvalidRoomName):
        validate_room_name("a\ud800b", 255)


def test_a_room_name_length_limit_of_0_allows_any_length() -> None:
    validate_room_name("x" * 100_000, 0)


def test_non_control_format_characters_are_allowed_in_room_names() -> None:
    validate_room_name("a\u200db\u00a0c", 255)  # category Cf and Zs, not Cc


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (InvalidRoomName(), "invalid room name"),
        (TooManyRooms(100), "too many rooms (100 max)"),
        (RoomLimitReached(100000), "room limit reached (100000 rooms)"),
        (MessageTooLong(70002, 65536), "message is too long (70002 > 65536 bytes)"),
    ],
)
def test_limit_errors_cross_rpc_with_their_class_and_text(error: Exception, text: str) -> None:
    assert str(error) == text
    rebuilt = error_from_wire(type(error).__name__, text)
    assert type(rebuilt) is type(error)
    assert str(rebuilt) == text


# token bucket ---------------------------------------------------------------------------


def test_a_token_bucket_starts_full_with_twice_its_rate() -> None:
    bucket = TokenBucket(5, now=100.0)
    assert [bucket.take(100.0) for _ in range(11)] == [True] * 10 + [False]


def test_a_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(5, now=0.0)
    for _ in range(10):
        bucket.take(0.0)
    assert bucket.take(0.1) is False  # half a token
    assert bucket.take(0.2) is True  # one token after 0.2 s at 5/s
    assert bucket.take(0.2) is False


def test_a_token_bucket_saves_up_no_more_than_its_burst() -> None:
    bucket = TokenBucket(5, now=0.0)
    results = [bucket.take(3600.0) for _ in range(11)]
    assert results == [True] * 10 + [False]


def test_a_refused_request_costs_no_token() -> None:
    bucket = TokenBucket(1, now=0.0)
    bucket.take(0.0)
    bucket.take(0.0)
    for step in range(1, 10):  # refused every 0.1 s, yet a token is back after 1 s
        assert bucket.take(step / 10) is False
    assert bucket.take(1.0) is True


# encoded sizes and params ---------------------------------------------------------------


def test_encoded_size_over_counts_json_escapes() -> None:
    assert encoded_size_over("\x01" * 1000, 5000) == 6002  # each \x01 becomes \u0001
    assert encoded_size_over('"' * 10, 21) == 22


def test_encoded_size_within_the_limit_is_none() -> None:
    assert encoded_size_over("a" * 100, 102) is None
    assert encoded_size_over({"a": [1, 2, 3]}, 100) is None


def test_encoded_size_over_counts_utf8_bytes() -> None:
    assert encoded_size_over("é" * 100, 150) == 202


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200), st.integers(0, 400))
def test_encoded_size_over_agrees_with_the_encoder(text: str, limit: int) -> None:
    size = len(jsonwire.dumps(text))
    assert encoded_size_over(text, limit) == (size if size > limit else None)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200), st.integers(1, 8))
def test_a_string_measured_a_chunk_at_a_time_then_counted_has_its_encoded_size(
    text: str, chunk_length: int
) -> None:
    assert encoded_str_size(text, chunk_length) == len(jsonwire.dumps(text))


def test_a_megabyte_of_escapes_is_counted_after_its_first_chunk() -> None:
    for text in ("\x01" * 1_000_000, "\n" * 1_000_000, "a" * 70_000 + '"' * 1_000_000):
        assert encoded_size_over(text, 65536) == len(jsonwire.dumps(text))


def test_encoded_size_over_a_string_that_is_not_utf8_fails_as_encoding_it_does() -> None:
    with pytest.raises(TypeError):
        jsonwire.dumps("\ud800" * 10)
    with pytest.raises(TypeError):
        encoded_size_over("\ud800" * 10, 5)


def test_params_within_the_limits_pass() -> None:
    assert params_error({"a": "x" * 10, "b": 2}, 2, 12) is None


def test_more_params_than_allowed_are_too_many() -> None:
    assert params_error({str(n): n for n in range(65)}, 64, 4096) == "too many params (64 max)"


def test_a_param_value_over_the_length_is_too_long() -> None:
    assert params_error({"k": "v" * 4095}, 64, 4096) == "param is too long (4097 > 4096 bytes)"


def test_a_param_key_over_the_length_is_too_long() -> None:
    assert params_error({"k" * 5000: 1}, 64, 4096) == "param is too long (5002 > 4096 bytes)"


def test_param_limits_of_0_are_off() -> None:
    assert params_error({str(n): "x" * 10_000 for n in range(100)}, 0, 0) is None


# joined rooms ---------------------------------------------------------------------------


def test_joined_rooms_keep_join_order_and_are_a_list() -> None:
    rooms = JoinedRooms()
    for room in ("b", "a", "c", "a"):
        rooms.append(room)
    rooms.remove("a")
    assert rooms == ["b", "c"]
    assert isinstance(rooms, list)
    assert json.dumps(rooms) == '["b", "c"]'
    assert rooms[0] == "b" and len(rooms) == 2
    assert "c" in rooms and "a" not in rooms


@pytest.mark.parametrize("size", [6, 20])
def test_joined_rooms_membership_follows_every_change(size: int) -> None:
    rooms = JoinedRooms(f"r{n}" for n in range(size))
    rooms.remove("r1")
    popped = rooms.pop()
    rooms.insert(0, "first")
    rooms.remove_all(["r0", "r2"])
    rooms += ["late"]
    del rooms[1:2]
    expected = ["first", *(f"r{n}" for n in range(4, size - 1)), "late"]
    assert rooms == expected and popped == f"r{size - 1}"
    for room in [*expected, "r0", "r1", "r2", "r3", popped, "never"]:
        assert (room in rooms) == (room in expected), room
    rooms.clear()
    assert "first" not in rooms and rooms == []


def test_removing_a_room_that_is_not_joined_raises_value_error_like_a_list() -> None:
    with pytest.raises(ValueError):
        JoinedRooms(["a"]).remove("b")


def test_a_membership_test_costs_the_same_for_ten_rooms_or_a_hundred_thousand() -> None:
    small, large = JoinedRooms(map(str, range(10))), JoinedRooms(map(str, range(100_000)))

    def timed(rooms: JoinedRooms) -> float:
        start = time.perf_counter()
        for _ in range(20_000):
            "missing" in rooms  # noqa: B015
        return time.perf_counter() - start

    assert min(timed(large) for _ in range(3)) < 5 * min(timed(small) for _ in range(3))


# line splitting -------------------------------------------------------------------------


def _feed_in_pieces(data: bytes, sizes: list[int], max_length: int) -> list[object]:
    splitter, at = LineSplitter(max_length), 0
    events: list[object] = []
    for size in sizes:
        events += splitter.feed(data[at : at + size])
        at += size
    return events + splitter.feed(data[at:])


def test_lines_cut_at_any_points_give_the_same_events_as_one_feed() -> None:
    data = b"say a one\r\n\nroomAdd b\n" + b"x" * 32 + b"\n  \nlast\rpartial"
    whole = LineSplitter(32).feed(data)
    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.randint(1, 9) for _ in range(20)]
        assert _feed_in_pieces(data, sizes, 32) == whole


def test_an_unterminated_line_is_refused_as_soon_as_it_passes_the_limit() -> None:
    splitter = LineSplitter(10)
    assert [splitter.feed(b"x") for _ in range(10)] == [[]] * 10
    assert splitter.feed(b"x") == [TooLong(11, 10)]
    assert splitter.feed(b"yyy") == []  # the rest of that line is dropped
    assert splitter.feed(b"y\nok\n") == [Line("ok")]


def test_a_line_completed_over_the_limit_is_too_long() -> None:
    splitter = LineSplitter(10)
    assert splitter.feed(b"x" * 8) == []
    assert splitter.feed(b"x" * 4 + b"\nok\n") == [TooLong(12, 10), Line("ok")]


def _seconds_to_feed_byte_by_byte(size: int) -> float:
    splitter = LineSplitter(4 << 20)
    byte = b"x"
    start = time.perf_counter()
    for _ in range(size):
        splitter.feed(byte)
    elapsed = time.perf_counter() - start
    assert splitter.feed(b"\n") == [Line("x" * size)]
    return elapsed


@pytest.mark.timeout(60)
def test_feeding_a_line_one_byte_at_a_time_costs_time_linear_in_its_length() -> None:
    small = min(_seconds_to_feed_byte_by_byte(256 << 10) for _ in range(2))
    large = min(_seconds_to_feed_byte_by_byte(1 << 20) for _ in range(2))
    assert large / small < 8, (small, large)  # 4 for linear, 16 for quadratic
