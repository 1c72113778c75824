"""Sealing and opening cluster envelopes, and the rate-limited drop log (pure, no Redis)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random

import pytest

from roomcast.cluster.dropped import DropLog
from roomcast.cluster.envelope import (
    MAX_SIZE,
    BusKey,
    EnvelopeError,
    derive_key,
    open_envelope,
    seal,
)

TOKEN = "a shared secret"
KEY = derive_key(TOKEN)
CHANNEL = b"roomcast:chat:lobby"
NOW = 1_800_000_000.0
BODY = b'{"message":"hi","room":"lobby","from":"c1","context":"user","sentAt":1}'


def sealed(body: bytes = BODY, sender: str = "node-a", now: float = NOW) -> bytes:
    return seal(KEY, sender, body, now, channel=CHANNEL)


def reason(
    data: bytes,
    key: BusKey | bytes = KEY,
    now: float = NOW,
    max_age: float = 60.0,
    channel: bytes = CHANNEL,
) -> str:
    """Why ``open_envelope`` refuses ``data`` (fails the test when it accepts it)."""
    with pytest.raises(EnvelopeError) as caught:
        open_envelope(key, data, now, max_age, channel=channel)
    return caught.value.reason


def test_an_envelope_opens_to_its_sender_time_and_body() -> None:
    opened = open_envelope(KEY, sealed(), NOW + 1, channel=CHANNEL)
    assert (opened.sender, opened.sent_at, opened.body) == ("node-a", NOW, BODY)


def test_the_body_follows_the_header_line_byte_for_byte() -> None:
    data = sealed()
    assert data.endswith(b"\n" + BODY)
    assert data.index(b"\n") == len(data) - len(BODY) - 1


def test_a_sender_with_spaces_and_non_ascii_characters_round_trips() -> None:
    data = sealed(sender="node ä 1")
    assert open_envelope(KEY, data, NOW, channel=CHANNEL).sender == "node ä 1"


def test_the_token_and_the_key_never_appear_in_an_envelope() -> None:
    data = seal(derive_key("cluster-test-secret"), "a", b"{}", NOW)
    assert b"cluster-test-secret" not in data
    assert b"secret" not in data


def test_the_mac_is_hmac_sha256_keyed_by_the_derived_key() -> None:
    raw = hmac.new(TOKEN.encode(), b"roomcast-bus-v1", hashlib.sha256).digest()
    data = sealed()
    signed = data[69:]
    prefix = len(CHANNEL).to_bytes(4, "big") + CHANNEL
    assert data[4:68] == hmac.new(raw, prefix + signed, hashlib.sha256).hexdigest().encode()


@pytest.mark.parametrize("length", [0, 1, 32, 64, 65, 200])
def test_the_precomputed_hmac_matches_the_standard_library_for_any_key_length(
    length: int,
) -> None:
    key = bytes(range(256))[:length]
    message = b"some message"
    expected = hmac.new(key, b"\0\0\0\0" + message, hashlib.sha256).hexdigest().encode()
    assert BusKey(key).mac(b"", message) == expected


def test_raw_key_bytes_work_like_a_bus_key() -> None:
    raw = b"k" * 32
    data = seal(raw, "a", BODY, NOW)
    assert open_envelope(BusKey(raw), data, NOW).body == BODY


def test_a_tampered_body_has_a_bad_signature() -> None:
    assert reason(sealed().replace(b'"hi"', b'"ho"')) == "bad signature"


def test_a_tampered_sender_has_a_bad_signature() -> None:
    assert reason(sealed().replace(b" node-a\n", b" node-b\n")) == "bad signature"


def test_a_tampered_timestamp_has_a_bad_signature() -> None:
    stamp = b"%d" % int(NOW * 1000)
    assert reason(sealed().replace(stamp, b"%d" % (int(NOW * 1000) + 1))) == "bad signature"


def test_a_tampered_mac_has_a_bad_signature() -> None:
    data = bytearray(sealed())
    data[4] = ord("0") if data[4] != ord("0") else ord("1")
    assert reason(bytes(data)) == "bad signature"


def test_an_envelope_sealed_with_another_token_has_a_bad_signature() -> None:
    assert reason(sealed(), key=derive_key("another secret")) == "bad signature"


def test_an_envelope_replayed_on_another_channel_has_a_bad_signature() -> None:
    assert reason(sealed(), channel=b"roomcast:chat:other") == "bad signature"


def test_an_envelope_older_than_sixty_seconds_is_too_old() -> None:
    assert open_envelope(KEY, sealed(), NOW + 59.9, channel=CHANNEL).body == BODY
    assert reason(sealed(), now=NOW + 60.1) == "too old"


def test_an_envelope_sixty_seconds_ahead_is_from_the_future() -> None:
    assert open_envelope(KEY, sealed(), NOW - 59.9, channel=CHANNEL).body == BODY
    assert reason(sealed(), now=NOW - 60.1) == "from the future"


def test_max_age_is_the_callers_choice() -> None:
    assert reason(sealed(), now=NOW + 2, max_age=1.0) == "too old"


def test_every_truncation_of_an_envelope_is_refused() -> None:
    data = sealed()
    reasons = {reason(data[:cut]) for cut in range(len(data))}
    assert reasons <= {"not an envelope", "malformed", "bad signature"}


def test_an_oversized_message_is_too_large_before_it_is_parsed() -> None:
    assert reason(b"x" * (MAX_SIZE + 1)) == "too large"
    big = seal(KEY, "a", b" " * MAX_SIZE, NOW, channel=CHANNEL, max_size=2 * MAX_SIZE)
    assert reason(big) == "too large"


def test_seal_refuses_a_body_receivers_would_drop_as_too_large() -> None:
    with pytest.raises(EnvelopeError, match="too large"):
        seal(KEY, "a", b"x" * MAX_SIZE, NOW)


def test_the_old_token_in_clear_format_is_not_an_envelope() -> None:
    old = b'{"serverToken":"a shared secret","serverId":"a"}\n' + BODY
    assert reason(old) == "not an envelope"


@pytest.mark.parametrize(
    "header",
    [
        b"rc1 " + b"0" * 64 + b" 12x34 node\n",  # timestamp not digits
        b"rc1 " + b"0" * 64 + b" -1234 node\n",  # negative timestamp
        b"rc1 " + b"0" * 64 + b" 1234 \n",  # no sender
        b"rc1 " + b"0" * 64 + b" 1234\n",  # no space before the sender
        b"rc1 " + b"0" * 63 + b" 1234 node\n",  # short MAC
        b"rc1 " + b"0" * 64 + b" 1234 " + b"n" * 5000 + b"\n",  # endless header
    ],
)
def test_a_malformed_header_is_malformed(header: bytes) -> None:
    assert reason(header + BODY) == "malformed"


def test_random_corruption_only_ever_raises_envelope_error() -> None:
    rng = random.Random(7)
    data = sealed()
    for _ in range(2000):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        if bytes(corrupt) != data:
            reason(bytes(corrupt))


@pytest.mark.parametrize("sender", ["", "a\nb", "a\rb"])
def test_seal_refuses_a_sender_that_is_not_one_line(sender: str) -> None:
    with pytest.raises(ValueError, match="sender"):
        seal(KEY, sender, BODY, NOW)


# the drop log -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_first_drop_is_logged_at_once(caplog: pytest.LogCaptureFixture) -> None:
    drops = DropLog(logging.getLogger("t"), "chat message", clock=Clock())
    drops.drop("bad signature", "roomcast:chat:x")
    assert warnings(caplog) == [
        "dropped 1 chat message (bad signature: 1, last on roomcast:chat:x)"
    ]


def test_drops_within_the_interval_make_one_line_with_counts_by_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    drops = DropLog(logging.getLogger("t"), "cluster message", clock=clock)
    drops.drop("bad signature")
    for _ in range(1990):
        drops.drop("bad signature")
    for _ in range(10):
        drops.drop("too old")
    assert len(warnings(caplog)) == 1
    clock.now += 10.0
    drops.drop("too old")
    assert warnings(caplog)[1:] == [
        "dropped 2001 cluster messages in 10.0s (bad signature: 1990, too old: 11)"
    ]
    assert drops.total == {"bad signature": 1991, "too old": 11}


async def test_drops_after_the_last_line_are_logged_when_the_interval_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drops = DropLog(logging.getLogger("t"), "RPC request", interval=0.05)
    drops.drop("malformed")
    drops.drop("malformed")
    drops.drop("replayed")
    assert len(warnings(caplog)) == 1
    for _ in range(100):
        if len(warnings(caplog)) == 2:
            break
        await asyncio.sleep(0.01)
    assert warnings(caplog)[1].startswith("dropped 2 RPC requests in 0.")
    assert warnings(caplog)[1].endswith("(malformed: 1, replayed: 1)")
