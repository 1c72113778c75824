"""Errors of the cluster layer, and how errors cross it.

The cluster knows no chat: the layer above hands :class:`WireErrors` the exception types
it wants raised on timeouts and missing owners, and the classes that may be rebuilt by
name when a remote node's error comes back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from redis.exceptions import RedisError

#: What a lost or broken Redis raises; everything in the cluster layer survives them.
REDIS_DOWN = (RedisError, OSError, asyncio.TimeoutError)


class RpcTimeoutError(Exception):
    """No answer in time (the default for :attr:`WireErrors.timeout`)."""

    def __init__(self) -> None:
        super().__init__("RPC Timeout")


class NoOwnerError(Exception):
    """No live node owns the connection (the default for :attr:`WireErrors.not_found`)."""

    def __init__(self) -> None:
        super().__init__("connection not found")


class RemoteCallError(Exception):
    """A remote error whose type is not registered (the default for ``remote``)."""


class WireErrors:
    """Which exceptions RPC raises, and how a remote error is rebuilt from its name and text.

    A rebuilt error is an instance of the registered class of that name, or of ``remote``,
    and its ``str()`` is always the remote text, unchanged.
    """

    def __init__(
        self,
        *,
        timeout: Callable[[], Exception] = RpcTimeoutError,
        not_found: Callable[[], Exception] = NoOwnerError,
        remote: type[Exception] = RemoteCallError,
        known: Iterable[type[Exception]] = (),
    ) -> None:
        self.timeout = timeout
        self.not_found = not_found
        self._remote = remote
        self._by_name: dict[str, type[Exception]] = {cls.__name__: cls for cls in known}

    def rebuild(self, kind: str, message: str) -> Exception:
        """The error ``kind`` with text ``message``, as raised on the remote node."""
        cls = self._by_name.get(kind)
        if cls is None:
            return self._remote(message)
        error = cls.__new__(cls)
        Exception.__init__(error, message)
        return error
