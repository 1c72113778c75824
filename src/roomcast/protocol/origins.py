"""Origins of browser requests, compared the way browsers write them.

An ``Origin`` header is ``scheme://host[:port]``; two origins are the same when their
schemes and hosts match case-insensitively and their ports match (a scheme's default
port may be written or left out).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize_origin(origin: str) -> str:
    """``origin`` with scheme and host lower-cased and a default port left out.

    A value that is no ``scheme://host`` origin (such as ``null``) is only lower-cased,
    so it matches nothing but itself.
    """
    text = origin.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text.lower()
    host = parts.hostname
    if not parts.scheme or not host:
        return text.lower()
    scheme = parts.scheme.lower()
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    if port is None or _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class OriginPolicy:
    """Which ``Origin`` headers may reach the node; an empty list allows every origin."""

    __slots__ = ("_allowed",)

    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(normalize_origin(origin) for origin in allowed)

    @property
    def restricted(self) -> bool:
        """True when only the listed origins are allowed."""
        return bool(self._allowed)

    def allows(self, origin: str | None) -> bool:
        """Whether a request with this ``Origin`` header (None: it had none) may proceed.

        A request without the header does not come from a browser page and is allowed;
        the caller answers a refused one with 403.
        """
        if origin is None or not self._allowed:
            return True
        return normalize_origin(origin) in self._allowed
