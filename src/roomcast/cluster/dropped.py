"""Counting dropped cluster messages, logged at most one line per interval."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable


class DropLog:
    """Count dropped messages of one kind and log them as one WARNING line per interval.

    The first drop is logged at once; later ones are counted and reported (with counts by
    reason) in one line when the interval is over, so a flood of junk costs a counter
    increment per message, not a log line. Call :meth:`drop` for each dropped message.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self.interval = interval
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._last_line: float | None = None
        self._last_where = ""
        self._flush: asyncio.TimerHandle | None = None
        #: Drops counted since this object was made, by reason.
        self.total: dict[str, int] = {}

    def drop(self, reason: str, where: str = "") -> None:
        """Count one dropped message (``where``: its channel, named in the next line)."""
        self._counts[reason] = self._counts.get(reason, 0) + 1
        self.total[reason] = self.total.get(reason, 0) + 1
        self._last_where = where
        now = self._clock()
        if self._last_line is None or now - self._last_line >= self.interval:
            self.flush()
        elif self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop to wake us: the next drop after the interval logs these
            delay = self._last_line + self.interval - now
            self._flush = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        """Log what was counted since the last line (nothing when nothing was)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._counts:
            return
        now = self._clock()
        count = sum(self._counts.values())
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self._counts.items()))
        since = "" if self._last_line is None else f" in {now - self._last_line:.1f}s"
        where = f", last on {self._last_where}" if self._last_where else ""
        what = self._what if count == 1 else self._what + "s"
        self._log.warning("dropped %d %s%s (%s%s)", count, what, since, reasons, where)
        self._counts.clear()
        self._last_line = now
