"""Reconnect backoff: exponential, capped, jittered."""

from botmeter.pbx.ami_client import backoff_delay


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half():
    lows = [backoff_delay(n, 0.5, 30.0, rand=lambda: 0.0) for n in range(10)]
    highs = [backoff_delay(n, 0.5, 30.0, rand=lambda: 1.0) for n in range(10)]
    assert lows[:4] == [0.25, 0.5, 1.0, 2.0] and highs[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(highs) == 30.0 and lows[-1] == 15.0
    assert backoff_delay(10_000, 0.5, 30.0) <= 30.0  # no overflow after days of retries
