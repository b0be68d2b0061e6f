"""The agent live over loopback TCP against the simulated PBX (and a few rude fake servers),
on asyncio's loop and on uvloop (production's)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from botmeter import runtime
from botmeter.config import load_config
from botmeter.demo import demo_config, mismatches, record_scripted_calls
from botmeter.service import AgentService
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import ScriptedCall, mixed_calls
from botmeter.storage.store import CallStore

from .fake_ami import start_fake_ami
from .helpers import eventually

pytestmark = pytest.mark.both_loops


async def test_each_live_test_runs_on_the_loop_its_id_names(request: pytest.FixtureRequest) -> None:
    assert request.node.name.endswith(f"[{runtime.loop_name()}]")


async def test_every_scripted_call_is_recorded_once_with_its_outcome_and_times(tmp_path):
    calls = mixed_calls(24, seed=11)
    records = await record_scripted_calls(calls, tmp_path / "live.db", speed=60, concurrency=12)
    assert len(records) == len(calls)
    by_number = {r.caller_number: r for r in records}
    assert len(by_number) == len(calls)
    for call in calls:
        assert mismatches(call, by_number.get(call.caller_number)) == [], call


async def test_a_caller_who_hangs_up_on_the_bot_is_handled_with_the_bot_time(tmp_path):
    calls = [ScriptedCall("13900020001", "王五", "handled", 1.0, 4.5, caller_hangs_up=True),
             ScriptedCall("13900020002", "Bob", "handled", 2.0, 3.0, via="sip",
                          caller_hangs_up=True)]
    records = await record_scripted_calls(calls, tmp_path / "live.db", speed=60, concurrency=2)
    by_number = {r.caller_number: r for r in records}
    for call in calls:
        assert mismatches(call, by_number.get(call.caller_number)) == [], call


async def test_connection_cut_mid_call_and_restored_keeps_every_call_once(tmp_path):
    db = tmp_path / "cut.db"
    long_calls = [
        ScriptedCall(f"1380000000{i}", "张三", "handled", ring_seconds=1.0, bot_seconds=30.0,
                     start_offset=float(i))
        for i in range(4)
    ] + [
        ScriptedCall("13800000009", "李四", "transferred", ring_seconds=1.0, bot_seconds=5.0,
                     human_seconds=40.0, start_offset=0.5),
    ]
    async with SimulatedPBX(speed=20, secret="s") as pbx:
        service = AgentService(demo_config(pbx.port, "s", db), store_path=db)
        running = asyncio.create_task(service.run())
        await asyncio.wait_for(service.client.connected.wait(), 5)
        play = asyncio.create_task(pbx.play(long_calls))
        await asyncio.sleep(10 / 20)  # pacing: 10 virtual seconds, every call is under way
        await eventually(lambda: service.recorder.tracker.active_calls == 5)
        pbx.drop_clients()
        await eventually(lambda: not service.client.connected.is_set())
        await eventually(lambda: service.client.connected.is_set())
        assert service.client.sessions == 2
        await play
        await eventually(lambda: service.writer.saved >= 5)
        service.stop()
        await running
    store = CallStore(db)
    records = store.calls()
    assert sorted(r.caller_number for r in records) == sorted(c.caller_number for c in long_calls)
    by_number = {r.caller_number: r for r in records}
    for call in long_calls:  # events lost in the gap touch none of these calls' milestones
        assert mismatches(call, by_number[call.caller_number]) == [], call


async def test_call_that_ends_while_disconnected_is_closed_by_the_snapshot(tmp_path):
    db = tmp_path / "gap.db"
    async with SimulatedPBX(speed=20, secret="s") as pbx:
        service = AgentService(demo_config(pbx.port, "s", db), store_path=db)
        # reconnect only after 0.5-1 s (10-20 virtual s): the call ends during the outage
        service.client.settings = replace(service.client.settings, reconnect_min=1.0,
                                          reconnect_max=1.0)
        running = asyncio.create_task(service.run())
        await asyncio.wait_for(service.client.connected.wait(), 5)
        short = ScriptedCall("13700000001", "", "handled", ring_seconds=1.0, bot_seconds=3.0)
        play = asyncio.create_task(pbx.play([short]))
        await eventually(lambda: service.recorder.tracker.active_calls == 1)  # the agent saw it
        await asyncio.sleep(2 / 20)  # pacing: 2 virtual seconds, the caller is with the bot
        pbx.drop_clients()
        await play
        assert not service.client.connected.is_set()
        assert service.recorder.tracker.active_calls == 1
        await asyncio.wait_for(service.client.connected.wait(), 5)
        await eventually(lambda: service.writer.saved == 1)
        service.stop()
        await running
    [record] = CallStore(db).calls()
    assert record.caller_number == "13700000001"
    assert record.bot_answered_at is not None and record.outcome == "handled"
    # closed at the reconnect by the agent's clock; the hangup itself (and its cause) was never seen
    assert record.hangup_cause is None and record.ended_at >= record.bot_answered_at


async def test_wrong_credentials_are_logged_and_retried_with_backoff(tmp_path):
    async with SimulatedPBX(speed=20, secret="right") as pbx:
        service = AgentService(demo_config(pbx.port, "wrong", tmp_path / "x.db"))
        with structlog.testing.capture_logs() as logs:
            running = asyncio.create_task(service.run())
            await eventually(lambda: pbx.login_failures >= 3, timeout=10)
            assert not running.done() and not service.client.connected.is_set()
            service.stop()
            await running
    refused = [e for e in logs if e["event"] == "ami login refused"]
    assert len(refused) >= 3 and refused[0]["username"] == "botmeter"
    assert "Authentication failed" in refused[0]["reason"]
    delays = [e["in_seconds"] for e in logs if e["event"] == "ami reconnecting"]
    assert len(delays) >= 2 and all(0.05 <= d <= 1.0 for d in delays)


async def test_unanswered_pings_mean_a_dead_connection(tmp_path):
    server, port, connections = await start_fake_ami(answer_pings=False)  # a hung Asterisk
    service = AgentService(demo_config(port, "s", tmp_path / "p.db"))
    service.client.settings = replace(service.client.settings, ping_interval=0.1,
                                      ping_timeout=0.1, reconnect_min=0.05, reconnect_max=0.1)
    running = asyncio.create_task(service.run())
    await eventually(lambda: len(connections) >= 3, timeout=10)
    service.stop()
    await running
    server.close()
    assert service.client.sessions >= 2  # each session logged in, then was declared dead


async def test_asterisk_shutdown_then_restart_on_the_same_port(tmp_path):
    db = tmp_path / "restart.db"
    pbx = SimulatedPBX(speed=50, secret="s")
    await pbx.start()
    port = pbx.port
    service = AgentService(demo_config(port, "s", db), store_path=db)
    running = asyncio.create_task(service.run())
    await asyncio.wait_for(service.client.connected.wait(), 5)
    await pbx.stop()
    await eventually(lambda: not service.client.connected.is_set())
    async with SimulatedPBX(port=port, speed=50, secret="s") as again:
        await asyncio.wait_for(service.client.connected.wait(), 10)
        await again.play([ScriptedCall("13600000001", "", "handled", 1.0, 2.0)])
        await eventually(lambda: service.writer.saved == 1)
    service.stop()
    await running
    assert service.client.sessions == 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_botmeter_run_records_and_stops_cleanly_on_signals(tmp_path, write_config, sig):
    async with SimulatedPBX(speed=50, secret="botmeter-sim") as pbx:
        config = write_config(port=pbx.port)
        proc = subprocess.Popen([sys.executable, "-m", "botmeter.cli", "--config", str(config), "run"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            await eventually(lambda: pbx.clients == 1, timeout=15)
            await pbx.play(mixed_calls(6, seed=3), concurrency=6)
            db = load_config(config).store_path()
            start = time.monotonic()
            await eventually(lambda: db.exists() and CallStore(db).count() == 6, timeout=5)
            assert time.monotonic() - start < 1.0  # the last call is on disk within a second
            proc.send_signal(sig)
            out, _ = await asyncio.to_thread(proc.communicate, timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out.decode()
    assert b"botmeter stopped" in out
    assert CallStore(Path(db)).count() == 6


async def test_plain_login_works_too(tmp_path):
    db = tmp_path / "plain.db"
    async with SimulatedPBX(speed=50, secret="s") as pbx:
        service = AgentService(demo_config(pbx.port, "s", db), store_path=db)
        service.client.settings = replace(service.client.settings, auth="plain")
        running = asyncio.create_task(service.run())
        await asyncio.wait_for(service.client.connected.wait(), 5)
        await pbx.play([ScriptedCall("13500000001", "", "handled", 1.0, 2.0)])
        await eventually(lambda: service.writer.saved == 1)
        service.stop()
        await running
    assert pbx.login_failures == 0 and [r.caller_number for r in CallStore(db).calls()] == ["13500000001"]
