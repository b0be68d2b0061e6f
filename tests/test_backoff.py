"""The one retry schedule (AMI reconnects, the writer's and replay's retries): capped
exponential with jitter, starting over only after a stable session. No real waiting."""

from __future__ import annotations

import pytest

from botmeter.backoff import Backoff, backoff_delay


class FakeTime:
    """A clock and a sleep that only move when told (sleeping moves the clock)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _backoff(rand: float, time: FakeTime | None = None, **kwargs: float) -> Backoff:
    time = time or FakeTime()
    return Backoff(0.5, 30.0, rand=lambda: rand, clock=time.clock, sleep=time.sleep, **kwargs)


def test_the_delays_double_up_to_the_cap() -> None:
    highest = _backoff(1.0)
    assert [highest.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    lowest = _backoff(0.0)
    assert [lowest.next_delay() for _ in range(9)] == [0.25, 0.5, 1, 2, 4, 8, 15, 15, 15]
    assert highest.attempt == lowest.attempt == 9


@pytest.mark.parametrize("rand", [0.0, 0.25, 0.5, 0.999])
def test_the_jitter_stays_in_the_upper_half_of_the_cap(rand: float) -> None:
    backoff = _backoff(rand)
    for attempt in range(12):
        cap = min(30.0, 0.5 * 2 ** attempt)
        delay = backoff.next_delay()
        assert cap / 2 <= delay <= cap
        assert delay == pytest.approx(cap / 2 + rand * cap / 2)


def test_real_randomness_stays_within_the_bounds_too() -> None:
    backoff = Backoff(0.1, 5.0)
    for attempt in range(40):
        cap = min(5.0, 0.1 * 2 ** attempt)
        assert cap / 2 <= backoff.next_delay() <= cap


def test_no_overflow_after_days_of_retries() -> None:
    assert backoff_delay(10_000, 0.5, 30.0, rand=lambda: 1.0) == 30.0
    assert backoff_delay(-1, 0.5, 30.0, rand=lambda: 1.0) == 0.5


def test_wait_sleeps_the_delay_through_the_injected_sleep_at_most_the_limit() -> None:
    time = FakeTime()
    backoff = _backoff(1.0, time)
    assert [backoff.wait() for _ in range(3)] == [0.5, 1.0, 2.0]
    assert backoff.wait(limit=1.5) == 1.5  # a deadline closer than the delay
    assert backoff.wait(limit=-3.0) == 0.0
    assert time.slept == [0.5, 1.0, 2.0, 1.5, 0.0] and backoff.attempt == 5


def test_reset_starts_over_at_once() -> None:
    backoff = _backoff(1.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() == 0.5


def test_a_short_session_does_not_start_the_schedule_over() -> None:
    time = FakeTime()
    backoff = _backoff(1.0, time, stable_after=30.0)
    delays = []
    for _ in range(4):  # a peer that accepts the login and hangs up after 29 s
        backoff.up()
        time.now += 29.0
        assert backoff.down() == 29.0
        delays.append(backoff.wait())
    assert delays == [0.5, 1.0, 2.0, 4.0]


def test_a_stable_session_starts_the_schedule_over() -> None:
    time = FakeTime()
    backoff = _backoff(1.0, time, stable_after=30.0)
    for _ in range(3):
        backoff.wait()
    backoff.up()
    time.now += 30.0
    assert backoff.down() == 30.0
    assert backoff.attempt == 0 and backoff.wait() == 0.5


def test_a_session_that_never_came_up_counts_as_a_failure() -> None:
    time = FakeTime()
    backoff = _backoff(1.0, time, stable_after=30.0)
    backoff.wait()
    assert backoff.down() is None  # connection refused: nothing was up
    assert backoff.wait() == 1.0
    backoff.up()
    time.now += 100.0
    backoff.down()
    assert backoff.down() is None and backoff.attempt == 0  # counted once


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        Backoff(2.0, 1.0)
    with pytest.raises(ValueError, match="0 < low"):
        Backoff(0.0, 1.0)
