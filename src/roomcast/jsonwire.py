"""JSON encoding for every wire: orjson, compact, UTF-8 bytes."""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON bytes (non-JSON types become their ``str()``)."""
    return orjson.dumps(value, default=str)


def loads(data: bytes | str) -> Any:
    """Decode JSON; raises ``JSONDecodeError`` (a ``ValueError``) on bad input."""
    return orjson.loads(data)
