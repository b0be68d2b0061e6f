"""A crash at every point of a call, healed from the simulated PBX's CEL (issue 14): the agent
is a real `botmeter run` subprocess killed with SIGKILL before the bot answers, while the
caller is with the bot, during the handoff, after the hangup but before the call is stored,
and for the whole call; restarted, it records the call once, exactly as scripted."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import ScriptedCall, expected_record

from .agent_process import Agent
from .gap_support import stored
from .helpers import eventually

#: a transferred call: rings 1 s, Answer() 0.5 s, with the bot 4 s, the queue rings 1 s, the
#: human talks 3 s (virtual = wall seconds at speed 1)
CALL = ScriptedCall("13600000001", "陳大文", "transferred", ring_seconds=1.0, bot_seconds=4.0,
                    human_seconds=3.0, start_offset=0.0)
ANSWERED, HANDOFF, HANGUP = 1.5, 5.5, 9.5
#: when (seconds after the call starts) the agent is killed, and restarted
POINTS = {
    "before the bot answers": (0.6, 1.5),
    "with the bot": (3.0, 4.5),
    "during the handoff": (6.0, 7.0),
    "after the hangup, before storing": (HANGUP + 0.8, HANGUP + 1.5),
    "down for the whole call": (-0.5, HANGUP + 1.0),
}


def _checkpoint(db: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT count(*) FROM recovery_state").fetchone()[0] > 0
        finally:
            conn.close()
    except sqlite3.Error:
        return False


@pytest.mark.parametrize("point", list(POINTS))
async def test_a_crash_at_any_point_of_a_call_records_it_once_as_scripted(
        tmp_path: Path, write_config, point: str) -> None:
    kill_at, restart_at = POINTS[point]
    db, cel = tmp_path / "calls.db", tmp_path / "master.db"
    async with SimulatedPBX(speed=1.0, cel_db=cel) as pbx:
        config = write_config(port=pbx.port, extra=f'\n[recovery]\ncel_db = "{cel}"\n')
        agent = Agent(config)
        lock: sqlite3.Connection | None = None
        try:
            await eventually(lambda: pbx.clients == 1 and _checkpoint(db), timeout=20)
            loop = asyncio.get_running_loop()
            start = loop.time()
            playing = asyncio.create_task(pbx.play([CALL]))

            async def at(seconds: float) -> None:
                await asyncio.sleep(max(0.0, start + seconds - loop.time()))

            if point == "after the hangup, before storing":
                # the database refuses the call: the hangup is seen, the call is not stored
                await at(HANGUP - 1.0)
                lock = sqlite3.connect(db, timeout=5, isolation_level=None)
                lock.execute("BEGIN EXCLUSIVE")
            await at(kill_at)
            agent.kill()
            if lock is not None:
                lock.execute("ROLLBACK")
                lock.close()
                lock = None
                assert stored(db) == []  # it died before storing the call
            await at(restart_at)
            agent = Agent(config)
            await playing
            await eventually(lambda: len(stored(db)) >= 1, timeout=20)
            code, _ = await agent.stop()
        finally:
            if lock is not None:
                lock.close()
            agent.kill()
    out = "".join(agent.lines)
    assert code == 0, out
    [record] = stored(db)  # once
    expected = expected_record(CALL)
    assert record.caller_number == CALL.caller_number and record.caller_name == CALL.caller_name
    assert record.outcome == expected["outcome"] and record.transfer_answered is True
    assert record.bot_seconds == pytest.approx(expected["bot_seconds"], abs=0.35), out
    assert record.human_seconds == pytest.approx(expected["human_seconds"], abs=0.6), out
    assert {m: float(u.quantity) for m, u in record.modules.items()} == {
        m: float(v["quantity"]) for m, v in expected["modules"].items()}
    assert record.source == "cel" and not record.joined_late
