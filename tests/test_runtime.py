"""The agent's loop (uvloop where installed) runs the FastAGI server and the AMI client alike."""

from __future__ import annotations

import asyncio

from botmeter import runtime
from botmeter.bot.fastagi import FastAgiServer
from botmeter.demo import record_scripted_calls
from botmeter.sim.scenarios import mixed_calls


def test_fastagi_session_on_the_agents_loop():
    async def session() -> tuple[str, list, dict]:
        got: list = []
        async with FastAgiServer(port=0, on_signal=got.append) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"agi_network: yes\nagi_network_script: botmeter/usage?module=asr&"
                         b"quantity=1.5&unit=seconds\nagi_uniqueid: 9.1\n\n")
            while line := await reader.readline():
                writer.write(b"200 result=1 (9.0)\n" if line.startswith(b"GET") else b"200 result=1\n")
            writer.close()
            return runtime.loop_name(), got, server.counters()

    loop, got, counters = runtime.run(session())
    assert loop in ("uvloop", "asyncio")
    assert [(s.linkedid, s.signal, s.fields["Quantity"]) for s in got] == [("9.0", "usage", "1.5")]
    assert counters["signals"] == 1 and counters["errors"] == 0


def test_scripted_calls_on_the_agents_loop(tmp_path):
    calls = mixed_calls(8, seed=4, signal_via="fastagi")
    records = runtime.run(record_scripted_calls(calls, tmp_path / "loop.db", speed=40, concurrency=8))
    assert sorted(r.caller_number for r in records) == sorted(c.caller_number for c in calls)
