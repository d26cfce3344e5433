"""The wait between rounds of reconnects (muster-protocol(7),
Reconnecting): 250 ms doubling up to 5 s, each wait between half and one
and a half of that, so that a fleet does not reconnect in step."""

from __future__ import annotations

import random
from typing import Callable, Optional

FIRST = 0.25
MAXIMUM = 5.0


def jittered(base: float, r: float) -> float:
    """``base`` times a factor from 0.5 to 1.5, ``r`` being a number from 0
    to 1."""
    return base * (0.5 + r)


class Backoff:
    """``next()`` gives the wait after one more round of failures: 0.25 s,
    0.5 s, 1 s, 2 s, 4 s, then 5 s, each jittered; ``reset()`` starts over
    (after a connection that held)."""

    def __init__(
        self,
        first: float = FIRST,
        maximum: float = MAXIMUM,
        rng: Optional[Callable[[], float]] = None,
    ) -> None:
        if first <= 0 or maximum < first:
            raise ValueError("backoff needs 0 < first <= maximum")
        self.first = first
        self.maximum = maximum
        self._rng = rng or random.random
        self._base = first

    @property
    def base(self) -> float:
        """The wait the next round would take before its jitter."""
        return self._base

    def next(self) -> float:
        wait = jittered(self._base, self._rng())
        self._base = min(self._base * 2, self.maximum)
        return wait

    def reset(self) -> None:
        self._base = self.first
