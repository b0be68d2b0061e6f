"""The one retry schedule: capped exponential backoff with jitter.

The AMI client waits it out between reconnects, the record writer between attempts to store
a batch the database refuses (locked, disk full), `replay` likewise. The delay before retry n
(counting from 0) is drawn from [cap/2, cap] with cap = min(high, low * 2**n): the jitter
spreads the retries of many agents, the lower bound keeps the growth. The schedule starts
over after a success, but only once that success has lasted `stable_after` seconds, so a peer
that accepts a login and hangs up at once gets ever longer delays rather than a storm.

The random source, the clock and the sleep are injectable: tests need no real waiting.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

#: exponents beyond this change nothing (the cap is reached long before) and never overflow
_MAX_EXPONENT = 60


def backoff_delay(attempt: int, low: float, high: float,
                  rand: Callable[[], float] = random.random) -> float:
    """The delay before retry `attempt` (from 0): in [cap/2, cap], cap = min(high, low * 2**attempt)."""
    cap = min(high, low * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))
    return cap / 2 + rand() * cap / 2


class Backoff:
    """A retry schedule's state: how many retries in a row, and since when things work.

    `next_delay()` gives the next delay and counts the retry; `wait(limit)` also sleeps it.
    `reset()` starts over at once (a write that succeeded); `up()` and `down()` bracket a
    session, which starts the schedule over only if it lasted `stable_after` seconds.
    """

    def __init__(self, low: float, high: float, *, stable_after: float = 0.0,
                 rand: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        if not 0 < low <= high:
            raise ValueError(f"backoff needs 0 < low <= high, got {low} and {high}")
        self.low = low
        self.high = high
        self.stable_after = stable_after
        self.attempt = 0
        self._rand = rand
        self._clock = clock
        self._sleep = sleep
        self._up_since: float | None = None

    def next_delay(self) -> float:
        """The delay before the next retry; counts it."""
        delay = backoff_delay(self.attempt, self.low, self.high, self._rand)
        self.attempt += 1
        return delay

    def wait(self, limit: float | None = None) -> float:
        """Sleep the next delay, at most `limit` seconds; returns the time asked to sleep."""
        delay = self.next_delay()
        if limit is not None:
            delay = min(delay, max(0.0, limit))
        self._sleep(delay)
        return delay

    def reset(self) -> None:
        """Start over: the next delay is the shortest again."""
        self.attempt = 0
        self._up_since = None

    def up(self) -> None:
        """A session started now (logged in, attached)."""
        self._up_since = self._clock()

    def down(self) -> float | None:
        """The session ended: start over if it lasted `stable_after` seconds. Returns how
        long it lasted (None if none was up)."""
        if self._up_since is None:
            return None
        lasted = self._clock() - self._up_since
        self._up_since = None
        if lasted >= self.stable_after:
            self.attempt = 0
        return lasted
