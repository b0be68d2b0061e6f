"""`botmeter run` as systemd runs it, a real subprocess against the simulated PBX: SIGHUP
reloads (a bad file is refused and recording goes on), SIGTERM mid-call stores every finished
call and exits 0 within 5 s, and the restarted agent records the call that was in progress
(picked up from the snapshot it asks for at login), each call once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import ScriptedCall
from botmeter.storage.store import CallStore

from .agent_process import Agent
from .helpers import eventually

#: the stop's contract (issue 13): every finished call stored, exit code 0, within 5 s
STOP_SECONDS = 5.0


def count(db: Path) -> int:
    if not db.exists():
        return 0
    store = CallStore(db, create=False)
    try:
        return store.count()
    finally:
        store.close()


async def test_sigterm_mid_call_then_restart_records_each_call_once(tmp_path: Path,
                                                                   write_config) -> None:
    db = tmp_path / "calls.db"
    short = [ScriptedCall(f"1350000000{i}", "", "handled", ring_seconds=1.0, bot_seconds=3.0,
                          start_offset=0.5 * i) for i in range(1, 4)]
    # with the bot for 12 wall seconds (at speed 20): through a stop and a restart
    long = ScriptedCall("13500000000", "", "handled", ring_seconds=1.0, bot_seconds=240.0)
    async with SimulatedPBX(speed=20) as pbx:
        config = write_config(port=pbx.port)
        first = Agent(config)
        try:
            await eventually(lambda: pbx.clients == 1, timeout=20)
            playing = asyncio.create_task(pbx.play([long, *short], concurrency=4))
            await eventually(lambda: count(db) == 3, timeout=10)
            config.write_text(config.read_text() + "\n[calls]\n")  # a bad file: refused
            first.proc.send_signal(signal.SIGHUP)
            await eventually(lambda: first.said("config not reloaded"), timeout=10)
            assert first.proc.poll() is None and not playing.done()  # recording goes on
            code, took = await first.stop()
        finally:
            first.kill()
        out = "".join(first.lines)
        assert code == 0, out
        assert took < STOP_SECONDS, (took, out)
        assert "botmeter stopped" in out and "in_progress=1" in out
        assert count(db) == 3 and not playing.done()  # the long call was still in progress
        config.write_text(config.read_text().removesuffix("\n[calls]\n"))
        second = Agent(config)
        try:
            await eventually(lambda: pbx.clients == 1, timeout=20)
            await playing
            await eventually(lambda: count(db) == 4, timeout=10)
            code, took = await second.stop()
        finally:
            second.kill()
        assert code == 0 and took < STOP_SECONDS, (code, took, "".join(second.lines))
    records = CallStore(db).calls()
    assert sorted(r.caller_number for r in records) == [f"1350000000{i}" for i in range(4)]
    [picked_up] = [r for r in records if r.caller_number == long.caller_number]
    assert picked_up.outcome == "handled" and picked_up.bot_answered_at is not None
    # offered when the call began (from the channel's age at the snapshot), not at the restart
    assert picked_up.total_seconds is not None and picked_up.total_seconds >= 200
