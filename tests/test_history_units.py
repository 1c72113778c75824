"""History's pure pieces: positions in a body, the Lua scripts on the embedded store, which
rooms keep history, and the parsing of the history verbs. No node, no socket."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from roomcast import jsonwire
from roomcast.chat.history import HistoryPolicy, history_policy
from roomcast.cluster.bus import Bus
from roomcast.cluster.envelope import derive_key, open_envelope
from roomcast.cluster.history import (
    HistoryState,
    HistoryStore,
    append_arguments,
    position_of,
    signed_header,
    split_position,
    with_position,
)
from roomcast.cluster.keys import Keys
from roomcast.protocol.requests import VerbRequest
from roomcast.protocol.socket_lines import parse_line
from roomcast.protocol.websocket_events import parse_event
from roomcast.verbs import VerbError, history_limit, recovery_position, whole_number

BODY = b'{"message":"hi","room":"r","from":"c1","context":"user","sentAt":1700000000000}'

# with_position / split_position -----------------------------------------------------------


def test_with_position_adds_offset_and_epoch_before_the_final_brace() -> None:
    assert with_position(BODY, 7, "e1") == BODY[:-1] + b',"offset":7,"epoch":"e1"}'


def test_with_position_of_an_empty_object_adds_no_comma() -> None:
    assert with_position(b"{}", 1, "E") == b'{"offset":1,"epoch":"E"}'


def test_with_position_refuses_a_body_that_is_not_an_object() -> None:
    with pytest.raises(ValueError):
        with_position(b'"text"', 1, "E")


def test_with_position_refuses_an_epoch_with_other_characters() -> None:
    with pytest.raises(ValueError):
        with_position(BODY, 1, "a b")


def test_a_positioned_body_is_valid_json_with_both_keys() -> None:
    message = jsonwire.loads(with_position(BODY, 12, "abc123"))
    assert (message["offset"], message["epoch"], message["message"]) == (12, "abc123", "hi")


def test_split_position_gives_back_the_original_body_offset_and_epoch() -> None:
    assert split_position(with_position(BODY, 42, "Zz9")) == (BODY, 42, "Zz9")


def test_split_position_gives_back_an_empty_object() -> None:
    assert split_position(with_position(b"{}", 3, "E")) == (b"{}", 3, "E")


def test_split_position_takes_off_exactly_one_suffix() -> None:
    already = with_position(BODY, 5, "old")
    assert split_position(with_position(already, 6, "new")) == (already, 6, "new")


def test_split_position_of_a_body_without_position_is_none() -> None:
    assert split_position(BODY) is None


def test_split_position_refuses_an_epoch_with_other_characters() -> None:
    assert split_position(BODY[:-1] + b',"offset":7,"epoch":"e-1"}') is None


def test_split_position_refuses_an_offset_with_a_leading_zero() -> None:
    assert split_position(BODY[:-1] + b',"offset":07,"epoch":"e1"}') is None


def test_position_of_reads_the_offset() -> None:
    assert position_of(with_position(BODY, 99, "E")) == 99


def test_position_of_a_presence_event_is_none() -> None:
    assert position_of(b'{"context":"presence","event":"join","id":"x","at":1}') is None


def test_a_signed_header_verifies_once_the_position_is_taken_off() -> None:
    key = derive_key("secret")
    header = signed_header(key, "emitter:h-1", BODY, channel="t:chat:r")
    assert header.endswith(b"\n") and header.count(b"\n") == 1
    published = header + with_position(BODY, 3, "E")
    head, _, body = published.partition(b"\n")
    said = split_position(body)
    assert said is not None and said[1:] == (3, "E")
    opened = open_envelope(key, head + b"\n" + said[0], channel=b"t:chat:r")
    assert (opened.sender, opened.body) == ("emitter:h-1", BODY)


def test_append_arguments_name_the_rooms_log_and_channel() -> None:
    keys, args = append_arguments(
        Keys("t:"), "r", b"H\n", BODY, size=5, ttl=1.5, prefix="p", publish_command="PUBLISH"
    )
    assert keys == ["t:history:r"]
    assert args == [b"H\n", BODY, 5, 1500, "p", "PUBLISH", "t:chat:r"]


def test_append_arguments_refuse_a_body_that_is_not_an_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        append_arguments(
            Keys("t:"), "r", b"", b'"text"', size=5, ttl=1.0, prefix="p", publish_command=""
        )


# the scripts, run by the embedded store --------------------------------------------------


def _store(publish_command: str = "PUBLISH") -> tuple[HistoryStore, fakeredis.FakeAsyncRedis]:
    redis = fakeredis.FakeAsyncRedis()
    return HistoryStore(redis, Keys("t:"), publish_command=publish_command), redis


async def test_the_append_script_stores_what_with_position_builds() -> None:
    store, redis = _store()
    offset, epoch = await store.append("r", b"H\n", BODY, size=10, ttl=60)
    assert offset == 1
    assert await redis.lrange("t:history:r", 0, -1) == [with_position(BODY, 1, epoch)]


async def test_the_append_script_publishes_the_header_and_the_positioned_body() -> None:
    store, redis = _store()
    listener = redis.pubsub()
    await listener.subscribe("t:chat:r")
    await listener.get_message(timeout=1.0)  # the subscribe confirmation
    offset, epoch = await store.append("r", b"H\n", BODY, size=10, ttl=60)
    message = await listener.get_message(timeout=1.0)
    assert message["data"] == b"H\n" + with_position(BODY, offset, epoch)
    await listener.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py


async def test_the_append_script_publishes_nothing_without_a_publish_command() -> None:
    store, redis = _store(publish_command="")
    listener = redis.pubsub()
    await listener.subscribe("t:chat:r")
    await listener.get_message(timeout=1.0)
    await store.append("r", b"H\n", BODY, size=10, ttl=60)
    assert await listener.get_message(timeout=0.2) is None
    await listener.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py


async def test_offsets_grow_by_one_within_an_epoch() -> None:
    store, _ = _store()
    results = [await store.append("r", b"", BODY, size=10, ttl=60) for _ in range(3)]
    assert [offset for offset, _ in results] == [1, 2, 3]
    assert len({epoch for _, epoch in results}) == 1


async def test_an_epoch_is_letters_and_digits_only() -> None:
    store, _ = _store()
    _, epoch = await store.append("r", b"", BODY, size=10, ttl=60)
    assert epoch.isascii() and epoch.isalnum()


async def test_the_log_is_trimmed_to_the_history_size() -> None:
    store, _ = _store()
    for _ in range(5):
        await store.append("r", b"", BODY, size=3, ttl=60)
    state = await store.read("r", 0, 0, ttl=60)
    assert (state.offset, state.first) == (5, 3)
    assert [position_of(m) for m in state.messages] == [3, 4, 5]


async def test_read_returns_messages_after_since_up_to_limit() -> None:
    store, _ = _store()
    for _ in range(6):
        await store.append("r", b"", BODY, size=10, ttl=60)
    state = await store.read("r", 2, 3, ttl=60)
    assert [position_of(m) for m in state.messages] == [3, 4, 5]


async def test_read_of_a_room_without_messages_starts_an_epoch_at_offset_zero() -> None:
    store, _ = _store()
    state = await store.read("quiet", 0, 0, ttl=60)
    assert (state.offset, state.messages) == (0, [])
    assert state.epoch
    _, epoch = await store.append("quiet", b"", BODY, size=10, ttl=60)
    assert epoch == state.epoch


async def test_a_lost_log_starts_a_new_epoch_at_offset_one() -> None:
    store, redis = _store()
    _, first = await store.append("r", b"", BODY, size=10, ttl=60)
    await redis.delete("t:history:r")
    offset, second = await store.append("r", b"", BODY, size=10, ttl=60)
    assert (offset, second != first) == (1, True)


async def test_a_log_not_written_by_the_script_starts_a_new_epoch() -> None:
    store, redis = _store()
    await redis.rpush("t:history:r", b"garbage")
    offset, _ = await store.append("r", b"", BODY, size=10, ttl=60)
    assert offset == 1
    assert await redis.llen("t:history:r") == 1


async def test_a_quiet_rooms_epoch_is_kept_as_a_marker_no_read_returns() -> None:
    store, redis = _store()
    state = await store.read("quiet", 0, 0, ttl=60)
    assert await redis.lrange("t:history:quiet", 0, -1) == [
        b'{"offset":0,"epoch":"%s"}' % state.epoch.encode()
    ]
    await store.append("quiet", b"", BODY, size=10, ttl=60)
    again = await store.read("quiet", 0, 0, ttl=60)
    assert [position_of(m) for m in again.messages] == [1]
    assert again.covers(0)


async def test_history_keys_expire_after_the_ttl() -> None:
    store, redis = _store()
    await store.append("r", b"", BODY, size=10, ttl=30)
    assert 0 < await redis.pttl("t:history:r") <= 30_000


async def test_drop_forgets_a_rooms_history() -> None:
    store, redis = _store()
    await store.append("r", b"", BODY, size=10, ttl=60)
    await store.drop("r")
    assert await redis.exists("t:history:r") == 0


def test_a_state_covers_since_when_nothing_after_it_was_trimmed() -> None:
    state = HistoryState("E", offset=10, first=6, messages=[])
    assert [state.covers(since) for since in (4, 5, 10, 11)] == [False, True, True, False]


# the bus confirms subscriptions -----------------------------------------------------------


async def test_the_bus_confirms_a_subscription_once_redis_has() -> None:
    bus = Bus(fakeredis.FakeAsyncRedis(), watchdog_channel="t:watchdog", watchdog_interval=5.0)
    await bus.start()
    try:
        await bus.subscribe("t:chat:r", lambda channel, data: None)
        async with asyncio.timeout(2.0):
            await bus.confirmed("t:chat:r")
    finally:
        await bus.stop()


async def test_the_bus_does_not_confirm_a_channel_it_never_subscribed() -> None:
    bus = Bus(fakeredis.FakeAsyncRedis(), watchdog_channel="t:watchdog", watchdog_interval=5.0)
    await bus.start()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await bus.confirmed("t:chat:never")
    finally:
        await bus.stop()


# which rooms keep history -----------------------------------------------------------------


def test_no_policy_when_history_size_is_zero() -> None:
    assert history_policy(0, 300.0, ["*"]) is None


def test_every_room_keeps_history_by_default() -> None:
    assert HistoryPolicy(10, 300.0).keeps("anything")


def test_history_rooms_are_fnmatch_globs() -> None:
    policy = HistoryPolicy(10, 300.0, ["game-*", "lobby"])
    assert [policy.keeps(r) for r in ("game-1", "lobby", "lobby2", "other")] == [
        True,
        True,
        False,
        False,
    ]


# parsing the verbs ------------------------------------------------------------------------


def test_socket_room_add_with_since_and_epoch() -> None:
    assert parse_line("roomAdd lobby 12 abc") == VerbRequest(
        "roomAdd", {"room": "lobby", "since": "12", "epoch": "abc"}
    )


def test_socket_room_add_alone_has_only_the_room() -> None:
    assert parse_line("roomAdd lobby") == VerbRequest("roomAdd", {"room": "lobby"})


def test_socket_room_history_with_since_and_limit() -> None:
    assert parse_line("roomHistory lobby 3 20") == VerbRequest(
        "roomHistory", {"room": "lobby", "since": "3", "limit": "20"}
    )


def test_socket_room_history_alone_has_only_the_room() -> None:
    assert parse_line("roomHistory lobby") == VerbRequest("roomHistory", {"room": "lobby"})


def test_websocket_room_add_with_since_and_epoch() -> None:
    request, _ = parse_event('{"event":"roomAdd","room":"r","since":4,"epoch":"e"}')
    assert request == VerbRequest("roomAdd", {"room": "r", "since": 4, "epoch": "e"})


def test_websocket_room_history_with_since_and_limit() -> None:
    request, _ = parse_event('{"event":"roomHistory","room":"r","since":0,"limit":5}')
    assert request == VerbRequest("roomHistory", {"room": "r", "since": 0, "limit": 5})


def test_whole_number_accepts_digits_and_ints() -> None:
    assert (whole_number("since", "12"), whole_number("since", 0)) == (12, 0)


@pytest.mark.parametrize("value", ["-1", "1.5", "x", -3, 2.0, True, None])
def test_whole_number_refuses_anything_else(value: object) -> None:
    with pytest.raises(VerbError, match=r"since must be a whole number \(0 or more\)"):
        whole_number("since", value)


def test_history_limit_defaults_to_100_and_stops_at_1000() -> None:
    assert (history_limit(None), history_limit("5"), history_limit(5000)) == (100, 5, 1000)


def test_history_limit_refuses_zero() -> None:
    with pytest.raises(VerbError, match="limit must be a whole number"):
        history_limit(0)


def test_recovery_needs_both_since_and_epoch() -> None:
    with pytest.raises(VerbError, match="recovering a room needs both since and epoch"):
        recovery_position("3", None)


def test_recovery_refuses_an_epoch_with_spaces() -> None:
    with pytest.raises(VerbError, match="epoch must be a non-empty string without spaces"):
        recovery_position(3, "a b")


def test_recovery_position_parses_since() -> None:
    assert recovery_position("3", "E") == (3, "E")
