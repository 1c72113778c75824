"""Signed envelopes for everything nodes say to each other over pub/sub (no I/O here).

An envelope is one header line, then the body bytes unchanged::

    rc1 <HMAC-SHA256, 64 hex digits> <sent at, ms since the epoch> <sender node id>\\n<body>

The MAC covers the channel the envelope is published on, the timestamp, the sender and
the body (everything after the MAC field), keyed by a key derived from the server token.
The version is bound through the key derivation, so the token itself never travels and
an envelope replayed on another channel does not verify. Receivers drop envelopes that
are older (or further in the future) than ``max_age`` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import NamedTuple

__all__ = [
    "MAX_AGE",
    "MAX_SIZE",
    "BusKey",
    "EnvelopeError",
    "Opened",
    "derive_key",
    "open_envelope",
    "seal",
]

#: Seconds an envelope stays acceptable, either side of the receiver's clock.
MAX_AGE = 60.0
#: Bytes of the largest envelope; far above a legal chat message or RPC plus its header.
MAX_SIZE = 4 << 20

_MAGIC = b"rc1 "
_MAC_END = len(_MAGIC) + 64  # where the hex MAC ends; the signed part starts after a space
_SIGNED = _MAC_END + 1
# A header longer than this is not ours: timestamp digits plus a node id of sane length.
_MAX_HEADER = _SIGNED + 20 + 1 + 1024 + 1
_LABEL = b"roomcast-bus-v1"


class EnvelopeError(ValueError):
    """An envelope that must be dropped; ``reason`` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Opened(NamedTuple):
    """A verified envelope: who sealed it, when (seconds since the epoch) and its body."""

    sender: str
    sent_at: float
    body: bytes
    #: The envelope's MAC (hex): unique per envelope, so it can spot a replay.
    mac: bytes


class BusKey:
    """The HMAC-SHA256 key of a cluster, set up once: each MAC starts from a copy of the
    keyed state instead of hashing the key's pads again."""

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def mac(self, channel: bytes, *parts: bytes | memoryview) -> bytes:
        """The hex HMAC of ``channel`` (length-prefixed, so it cannot bleed into the rest)
        followed by ``parts``."""
        mac = self._keyed.copy()
        mac.update(len(channel).to_bytes(4, "big"))
        mac.update(channel)
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()


def derive_key(token: str | bytes) -> BusKey:
    """The bus key of a cluster whose shared secret is ``token``; derive it once per node."""
    secret = token.encode() if isinstance(token, str) else token
    return BusKey(hmac.new(secret, _LABEL, hashlib.sha256).digest())


def _key(key: BusKey | bytes) -> BusKey:
    return key if isinstance(key, BusKey) else BusKey(key)


def seal(
    key: BusKey | bytes,
    sender: str,
    body: bytes,
    now: float | None = None,
    *,
    channel: bytes = b"",
    max_size: int = MAX_SIZE,
) -> bytes:
    """The envelope of ``body`` from ``sender``, to be published on ``channel`` as is.

    ``key`` comes from :func:`derive_key` (raw key bytes work too, more slowly). Raises
    ``EnvelopeError("too large")`` when receivers would drop the result, and
    ``ValueError`` for a sender that is empty or holds a line break.
    """
    name = sender.encode()
    if not name or b"\n" in name or b"\r" in name:
        raise ValueError(f"a sender must be a non-empty line, not {sender!r}")
    stamp = int((time.time() if now is None else now) * 1000)
    head = b"%d %s\n" % (stamp, name)
    if _SIGNED + len(head) + len(body) > max_size:
        raise EnvelopeError("too large")
    mac = _key(key).mac(channel, head, body)
    return b"".join((_MAGIC, mac, b" ", head, body))


def open_envelope(
    key: BusKey | bytes,
    data: bytes,
    now: float | None = None,
    max_age: float = MAX_AGE,
    max_size: int = MAX_SIZE,
    *,
    channel: bytes = b"",
) -> Opened:
    """Verify an envelope received on ``channel``; return what it carries.

    Raises :class:`EnvelopeError` with reason ``too large``, ``not an envelope``,
    ``malformed``, ``bad signature``, ``too old`` or ``from the future``; the caller
    drops the message (and counts it) and reads on.
    """
    if len(data) > max_size:
        raise EnvelopeError("too large")
    if not data.startswith(_MAGIC):
        raise EnvelopeError("not an envelope")
    end = data.find(b"\n", _SIGNED, _MAX_HEADER)
    space = data.find(b" ", _SIGNED, end)
    if end < 0 or space < 0 or data[_MAC_END] != 0x20:
        raise EnvelopeError("malformed")
    stamp = data[_SIGNED:space]
    if not stamp.isdigit() or space + 1 == end:
        raise EnvelopeError("malformed")
    expected = _key(key).mac(channel, memoryview(data)[_SIGNED:])
    mac = data[len(_MAGIC) : _MAC_END]
    if not hmac.compare_digest(expected, mac):
        raise EnvelopeError("bad signature")
    sent_at = int(stamp) / 1000
    age = (time.time() if now is None else now) - sent_at
    if age > max_age:
        raise EnvelopeError("too old")
    if age < -max_age:
        raise EnvelopeError("from the future")
    try:
        sender = data[space + 1 : end].decode()
    except UnicodeDecodeError:
        raise EnvelopeError("malformed") from None
    return Opened(sender, sent_at, data[end + 1 :], mac)
