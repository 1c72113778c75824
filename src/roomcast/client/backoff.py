"""How long a client waits before its next reconnect attempt."""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with a cap and jitter.

    Attempt ``n`` (counting from 1) waits between ``(1 - jitter) * c`` and ``c`` seconds,
    where ``c = min(maximum, initial * factor ** (n - 1))``. The random part spreads the
    clients of a node that went away over time, so they do not all come back at once.
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial:
            raise ValueError("backoff needs 0 <= initial <= maximum")
        if self.factor < 1:
            raise ValueError("backoff factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be between 0 and 1")

    def delay(self, attempt: int, random: Callable[[], float] = _random.random) -> float:
        """Seconds to wait before attempt ``attempt`` (1 for the first after a drop)."""
        try:
            ceiling = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        except OverflowError:
            ceiling = self.maximum
        return ceiling * (1 - self.jitter) + ceiling * self.jitter * random()
