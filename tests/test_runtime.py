"""The agent's loop: uvloop where installed, else asyncio's. (The tests that drive the agent
over sockets run on both loops: see `both_loops` in conftest.py.)"""

from __future__ import annotations

import asyncio
import sys

from botmeter import runtime
from botmeter.bot.fastagi import FastAgiServer

#: the loop production runs on: uvloop is a dependency wherever it has wheels (pyproject.toml)
EXPECTED_LOOP = "asyncio" if sys.platform == "win32" else "uvloop"


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
    assert loop == EXPECTED_LOOP
    assert [(s.linkedid, s.signal, s.fields["Quantity"]) for s in got] == [("9.0", "usage", "1.5")]
    assert counters["signals"] == 1 and counters["errors"] == 0
