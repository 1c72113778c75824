"""The pure pieces of the per-request limits: token buckets, encoded sizes, param checks.

Nothing here reads settings or the clock: callers pass the limit and the time, so each
piece can be tested with plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from roomcast import jsonwire

#: What a client over ``say_rate`` or ``action_rate`` is answered.
TOO_FAST = "you are sending too fast"


class TokenBucket:
    """``rate`` tokens per second, at most ``2 * rate`` saved up; it starts full.

    Call :meth:`take` once per request with the current time (any monotonic clock, in
    seconds): False means the request is over the rate and must be refused.
    """

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._burst = 2.0 * rate
        self._tokens = self._burst
        self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; True when the request may go ahead."""
        tokens = self._tokens + (now - self._stamp) * self._rate
        if tokens > self._burst:
            tokens = self._burst
        self._stamp = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


#: What JSON escapes: the control characters, ``"`` and ``\``. Seven take two bytes
#: (``\"``, ``\\``, ``\b``, ``\t``, ``\n``, ``\f``, ``\r``), the other control
#: characters six (``\u0001``).
_ESCAPED = bytes(range(32)) + b'"\\'
_SHORT_ESCAPES = b'"\\\b\t\n\f\r'
_NOT_ESCAPED = bytes(sorted(set(range(256)) - set(_ESCAPED)))


#: Characters of a long string encoded at a time while its size is measured.
_CHUNK = 65536


def encoded_size_over(value: Any, limit: int) -> int | None:
    """The JSON-encoded size of ``value`` in bytes when it is over ``limit``, else None.

    A string of n characters encodes to at most 6n + 2 bytes (``\\u0001`` is the longest
    escape), so a short one is not encoded at all; a long one is measured without
    encoding much of it (:func:`encoded_str_size`). Anything else is encoded once.
    """
    if isinstance(value, str):
        if 6 * len(value) + 2 <= limit:
            return None
        size = encoded_str_size(value)
    else:
        size = len(jsonwire.dumps(value))
    return size if size > limit else None


def encoded_str_size(text: str, chunk_length: int = _CHUNK) -> int:
    """``len(jsonwire.dumps(text))`` at a bounded cost.

    The encoder is quick on plain text but spends some 6 ms on a megabyte of control
    characters, so the string is encoded a chunk at a time; from the first chunk with
    many escapes on (a quarter of its characters or more, or non-ASCII text) the rest is
    counted instead, with two byte translations: under 2 ms a megabyte whatever it holds.
    Raises as the encoder does on a string that is not valid UTF-8.
    """
    size = 2
    for start in range(0, len(text), chunk_length):
        chunk = text[start : start + chunk_length]
        encoded = len(jsonwire.dumps(chunk)) - 2
        size += encoded
        if 4 * encoded >= 5 * len(chunk):
            raw = text[start + chunk_length :].encode()
            escaped = raw.translate(None, _NOT_ESCAPED)
            short = len(escaped) - len(escaped.translate(None, _SHORT_ESCAPES))
            return size + len(raw) + short + 5 * (len(escaped) - short)
    return size


def too_many_params(limit: int) -> str:
    return f"too many params ({limit} max)"


def param_too_long(size: int, limit: int) -> str:
    return f"param is too long ({size} > {limit} bytes)"


def params_error(params: Mapping[str, Any], max_params: int, max_length: int) -> str | None:
    """Why ``params`` break the param limits (0 turns one off), or None when they do not.

    A key is held to the length limit as well as its value, so that neither a stored
    param nor a request's params can grow without bound.
    """
    if max_params and len(params) > max_params:
        return too_many_params(max_params)
    if max_length:
        for key, value in params.items():
            size = encoded_size_over(key, max_length) or encoded_size_over(value, max_length)
            if size is not None:
                return param_too_long(size, max_length)
    return None
