"""Reconnect storms: a peer that accepts the login and hangs up at once gets ever longer delays;
the backoff starts over only after a session that stayed up."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from botmeter.pbx.ami_client import STABLE_SESSION_SECONDS, AmiClient, AmiSettings

from .fake_ami import start_fake_ami
from .helpers import eventually


async def _connect_times(hang_up_after: float, window: float, **settings: float
                         ) -> tuple[list[float], list[dict]]:
    """Attach to a fake AMI that logs us in, answers the snapshot and hangs up after
    `hang_up_after` seconds; return the loop times of the connections over `window` seconds
    and the client's `ami reconnecting` log entries."""
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def hang_up(writer: asyncio.StreamWriter) -> None:
        times.append(loop.time())
        await asyncio.sleep(hang_up_after)
        writer.close()

    server, port, _ = await start_fake_ami(after_snapshot=hang_up)
    client = AmiClient(AmiSettings("127.0.0.1", port, "u", "s", **settings), lambda event: None)
    with capture_logs() as logs:
        running = asyncio.create_task(client.run())
        await eventually(lambda: bool(times), timeout=5)
        start = times[0]
        await eventually(lambda: loop.time() - start >= window, timeout=window + 5, interval=0.05)
        await client.stop()
        await running
    server.close()
    return [t for t in times if t - start <= window], [
        e for e in logs if e["event"] == "ami reconnecting"]


async def test_a_peer_that_hangs_up_after_login_gets_growing_delays() -> None:
    assert STABLE_SESSION_SECONDS == 30.0
    times, reconnecting = await _connect_times(0.0, 2.5, reconnect_min=0.05, reconnect_max=0.4)
    # the delays double (0.025-0.05, 0.05-0.1, 0.1-0.2, then 0.2-0.4 s): at most ~17 sessions in
    # 2.5 s; with a reset after every login there were one every 25-50 ms (50 and more)
    assert 5 <= len(times) <= 20, times
    attempts = [e["attempt"] for e in reconnecting]
    assert attempts[:6] == [1, 2, 3, 4, 5, 6]  # never back to 1: no session stayed up
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] < 0.2 - 0.01 <= min(gaps[4:]), gaps  # 25-50 ms (+ the login), then >= 200 ms


async def test_the_backoff_starts_over_after_a_session_that_stayed_up() -> None:
    times, reconnecting = await _connect_times(0.3, 1.5, reconnect_min=0.05, reconnect_max=0.4,
                                               stable_after=0.2)
    assert len(times) >= 3
    assert {e["attempt"] for e in reconnecting} == {1}
    assert all(e["attached_seconds"] >= 0.2 for e in reconnecting)
