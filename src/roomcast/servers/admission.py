"""Admission of new connections: the connection limits, decided before a client exists.

The TCP server and both WebSocket upgrade paths ask :meth:`Admission.refusal` before they
build a :class:`~roomcast.connection.Connection`, so a refused client never gets an id,
runs no middleware and leaves nothing in the store. The object counts the persistent
connections open on the node and per remote address, meters how fast new ones arrive
(a token bucket), and watches how close the process is to its open-file limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roomcast.config import LimitsSettings

log = logging.getLogger("roomcast.servers")

#: Seconds between two log lines about the same kind of refusal.
LOG_INTERVAL = 10.0


class OpenFiles:
    """How near the process is to its open-file soft limit, counted at most once a second.

    Between two counts the figure is kept up to date by :meth:`opened` and :meth:`closed`,
    so a burst of connections within one second cannot run past the limit unseen.
    """

    __slots__ = (
        "_clock",
        "_count_files",
        "_counted_at",
        "_estimate",
        "_file_limit",
        "_interval",
        "limit",
        "threshold",
    )

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
        count_files: Callable[[], int | None] | None = None,
        file_limit: Callable[[], int] | None = None,
    ) -> None:
        """``count_files`` and ``file_limit`` default to the process's own figures."""
        self._clock = clock
        self._interval = interval
        self._count_files = count_files or count_open_files
        self._file_limit = file_limit or soft_file_limit
        self._counted_at = float("-inf")  # the first question counts
        self._estimate = 0
        #: The open-file soft limit when last counted (0: none).
        self.limit = 0
        #: Open files from which new connections are refused (0: never).
        self.threshold = 0

    @property
    def estimate(self) -> int:
        """Open files of the process as last counted, plus those opened since."""
        return self._estimate

    def near_limit(self) -> bool:
        """True when a new connection would take one of the last few free descriptors."""
        now = self._clock()
        if now - self._counted_at >= self._interval:
            self._counted_at = now
            self._count()
        return 0 < self.threshold <= self._estimate

    def opened(self) -> None:
        """A descriptor was opened for a connection (counted until the next count)."""
        self._estimate += 1

    def closed(self) -> None:
        """A connection counted by :meth:`opened` closed its descriptor."""
        self._estimate -= 1

    def _count(self) -> None:
        self.limit = self._file_limit()
        # Keep a margin (5 %, at least 16) for the store, logs and accept itself.
        self.threshold = self.limit - max(self.limit // 20, 16) if self.limit else 0
        counted = self._count_files()
        if counted is not None:
            self._estimate = counted


def soft_file_limit() -> int:
    """The process's open-file soft limit; 0 when unlimited or unknown."""
    try:
        import resource
    except ImportError:  # not on this platform
        return 0
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 0 if soft == resource.RLIM_INFINITY else int(soft)


def count_open_files() -> int | None:
    """How many descriptors the process has open, or None where that cannot be listed.

    Linux (6.2 and later) gives the count as the size of ``/proc/self/fd``, at the cost
    of one ``stat``; elsewhere the folder is listed, which costs a little per descriptor.
    """
    with contextlib.suppress(OSError):
        size = os.stat("/proc/self/fd").st_size
        if size > 0:
            return size
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder)) - 1  # listing it opened one more
        except OSError:
            continue
    return None


class _RefusalLog:
    """One log line per kind of refusal per :data:`LOG_INTERVAL`, with the count since."""

    __slots__ = ("_clock", "_last", "_unlogged")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def refused(self, kind: str, reason: str, level: int) -> None:
        now = self._clock()
        self._unlogged[kind] = unlogged = self._unlogged.get(kind, 0) + 1
        last = self._last.get(kind)
        if last is not None and now - last < LOG_INTERVAL:
            return
        self._last[kind] = now
        self._unlogged[kind] = 0
        log.log(
            level,
            "refusing new connections (%s): %s; %d refused since the last line",
            kind,
            reason,
            unlogged,
        )


class Admission:
    """The node's connection limits (``[limits]``), shared by every listener of a node.

    ``max_connections``, ``max_connections_per_ip`` and ``connection_rate`` apply to
    persistent connections (TCP and WebSocket); being near the open-file limit refuses
    every new connection, HTTP included. 0 turns a limit off.
    """

    __slots__ = (
        "_burst",
        "_clock",
        "_filled_at",
        "_log",
        "_max_per_ip",
        "_max_total",
        "_rate",
        "_tokens",
        "files",
        "open",
        "per_ip",
    )

    def __init__(
        self,
        limits: LimitsSettings,
        clock: Callable[[], float] = time.monotonic,
        files: OpenFiles | None = None,
    ) -> None:
        self._clock = clock
        self._max_total = limits.max_connections
        self._max_per_ip = limits.max_connections_per_ip
        self._rate = float(limits.connection_rate)
        # The bucket holds one second of connections (at least one) and starts full.
        self._burst = max(1.0, self._rate)
        self._tokens = self._burst
        self._filled_at = clock()
        self._log = _RefusalLog(clock)
        self.files = files if files is not None else OpenFiles(clock)
        #: Persistent connections admitted and not yet released.
        self.open = 0
        #: The same, per remote address (addresses with none are forgotten).
        self.per_ip: dict[str, int] = {}

    def refusal(self, remote_ip: str) -> str | None:
        """Why a new persistent connection from ``remote_ip`` must be refused, or None.

        None admits it and counts it: the caller must call :meth:`release` with the same
        address once, when its transport has closed. When refused, the caller tells a TCP
        client ``replies.BUSY``, answers an upgrade with 503, and closes the transport.
        """
        if self._max_total and self.open >= self._max_total:
            return self._refuse("max_connections", f"{self.open} open of {self._max_total}")
        held = self.per_ip.get(remote_ip, 0)
        if self._max_per_ip and held >= self._max_per_ip:
            return self._refuse(
                "max_connections_per_ip", f"{remote_ip} holds {held} of {self._max_per_ip}"
            )
        if self.files.near_limit():
            return self._files_refusal()
        if self._rate:
            now = self._clock()
            tokens = min(self._burst, self._tokens + (now - self._filled_at) * self._rate)
            self._filled_at = now
            if tokens < 1.0:
                self._tokens = tokens
                return self._refuse("connection_rate", f"over {self._rate:g} per second")
            self._tokens = tokens - 1.0
        self.open += 1
        self.per_ip[remote_ip] = held + 1
        self.files.opened()
        return None

    def release(self, remote_ip: str) -> None:
        """Forget a connection :meth:`refusal` admitted (its transport has closed)."""
        self.open -= 1
        held = self.per_ip.get(remote_ip, 0) - 1
        if held > 0:
            self.per_ip[remote_ip] = held
        else:
            self.per_ip.pop(remote_ip, None)
        self.files.closed()

    def http_refusal(self) -> str | None:
        """Why any new connection (an HTTP one too) must be refused now, or None.

        Only the open-file limit applies here; an admitted connection is not counted (the
        next count of open files, a second later at most, sees it).
        """
        if self.files.near_limit():
            return self._files_refusal()
        return None

    def _files_refusal(self) -> str:
        files = self.files
        return self._refuse(
            "open files",
            f"{files.estimate} open of a limit of {files.limit}",
            logging.WARNING,
        )

    def _refuse(self, kind: str, reason: str, level: int = logging.INFO) -> str:
        self._log.refused(kind, reason, level)
        return f"{kind}: {reason}"
