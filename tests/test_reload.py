"""SIGHUP: the agent reads its configuration and plan files again while it records, against
the simulated PBX over loopback, with a real signal: calls in progress stay, new rules and
plans take effect, what needs a restart keeps its old value, a bad file changes nothing."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import structlog

from botmeter.config import load_config, parse_config
from botmeter.rating import PlanBook, rate_calls
from botmeter.reload import changed_keys, is_live, keep_old_values
from botmeter.service import AgentService
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import ScriptedCall
from botmeter.storage.store import CallStore
from botmeter.uplink.buckets import iso_z

from .helpers import eventually
from .rating_support import PLANS_DIR
from .write_log import log_writes, writes

pytestmark = pytest.mark.both_loops

#: mid-November 2026 in the plans' time zone: every simulated call ends in 2026-11
EPOCH = datetime(2026, 11, 15, 12, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
PLANS = '\n[plans]\ndir = "plans"\nactive = "{active}"\n'


def short(number: str) -> ScriptedCall:
    return ScriptedCall(number, "", "handled", ring_seconds=1.0, bot_seconds=4.0)


def long_call(number: str) -> ScriptedCall:
    """A call still with the bot 6 wall seconds after it starts (at speed 20)."""
    return ScriptedCall(number, "", "handled", ring_seconds=1.0, bot_seconds=120.0)


@pytest.fixture
def plans_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plans"
    folder.mkdir()
    for name in ("per-minute.toml", "per-call.toml"):
        shutil.copy(PLANS_DIR / name, folder / name)
    return folder


class Agent:
    """An agent recording from `pbx`, its config in a file, SIGHUP wired as `botmeter run`
    wires it."""

    def __init__(self, service: AgentService, task: asyncio.Task[None]) -> None:
        self.service, self.task = service, task

    async def stop(self) -> None:
        self.service.stop()
        await self.task


@pytest.fixture
async def agent_on(tmp_path: Path) -> AsyncIterator:
    started: list[Agent] = []
    loop = asyncio.get_running_loop()

    async def start(pbx: SimulatedPBX, config: Path) -> Agent:
        service = AgentService(load_config(config), clock=pbx.now)
        loop.add_signal_handler(signal.SIGHUP, service.reload)
        agent = Agent(service, asyncio.create_task(service.run()))
        started.append(agent)
        await asyncio.wait_for(service.client.connected.wait(), 5)
        return agent

    try:
        yield start
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for agent in started:
            if not agent.task.done():
                await agent.stop()


def plans_of(db: Path) -> dict[str | None, int]:
    """How many stored calls are rated under each plan (None: not rated yet)."""
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT plan_id, count(*) FROM calls GROUP BY plan_id"))
    finally:
        conn.close()


def sighup() -> None:
    os.kill(os.getpid(), signal.SIGHUP)


async def test_sighup_mid_call_changes_the_plan_and_loses_nothing(
        tmp_path: Path, write_config, plans_dir: Path, agent_on) -> None:
    db = tmp_path / "calls.db"
    log_writes(db)
    async with SimulatedPBX(speed=20, epoch=EPOCH) as pbx:
        config = write_config(port=pbx.port, extra=PLANS.format(active="per-minute"))
        agent = await agent_on(pbx, config)
        service = agent.service
        rerater = service.rerater
        assert rerater is not None
        await eventually(lambda: rerater.rerated == ["2026-11"])  # opened at start
        first = asyncio.create_task(pbx.play(
            [long_call("13900000000"), *(short(f"1390000000{i}") for i in range(1, 4))],
            concurrency=4))
        await eventually(lambda: service.writer.saved == 3)  # stored under per-minute
        assert service.recorder.tracker.active_calls == 1  # the long call is with the bot
        write_config(port=pbx.port, extra=PLANS.format(active="per-call"))
        sighup()
        await eventually(lambda: service.reloader.reloads == 1)
        assert service.recorder.tracker.active_calls == 1  # still in progress, still tracked
        assert not first.done()
        assert service.saver is not None and service.saver.series.plan_id == "per-call"
        await first
        await pbx.play([short("13900000005"), short("13900000006")], concurrency=2)
        await eventually(lambda: service.writer.saved == 6)
        await eventually(lambda: plans_of(db) == {"per-call": 6})  # re-rated in the background
        await agent.stop()
    store = CallStore(db)
    records = store.calls()
    assert sorted(r.caller_number for r in records) == [f"1390000000{i}" for i in range(7)
                                                       if i != 4]
    assert all([op for op, _ in ops][0] == "INSERT" and [op for op, _ in ops].count("INSERT")
               == 1 for ops in writes(db).values())  # each call stored once
    stored = store.ratings(r.call_id for r in records)
    assert {r["plan_id"] for r in stored.values()} == {"per-call"}
    expected = rate_calls(records, PlanBook.load(plans_dir).series("per-call"))
    assert {cid: Decimal(r["cost"]) for cid, r in stored.items()} == {
        cid: charge.amount for cid, charge in expected.items()}


async def test_new_tracking_rules_take_effect_and_a_bad_file_changes_nothing(
        tmp_path: Path, write_config, agent_on) -> None:
    async with SimulatedPBX(speed=40, epoch=EPOCH) as pbx:
        config = write_config(port=pbx.port)
        good = config.read_text()
        agent = await agent_on(pbx, config)
        service = agent.service
        with structlog.testing.capture_logs() as logs:
            config.write_text(good.replace('"from-pstn"', '"from-pstm"'))
            sighup()
            await eventually(lambda: service.reloader.reloads == 1)
            await pbx.play([short("13700000001")])  # its context is no longer inbound
            config.write_text(good + '\n[budget]\nmonthly = "-1"\n')  # refused as a whole
            sighup()
            await eventually(lambda: service.reloader.failures == 1)
            await pbx.play([short("13700000002")])  # so the rules stay as reloaded before
            config.write_text(good)
            sighup()
            await eventually(lambda: service.reloader.reloads == 2)
            await pbx.play([short("13700000003")])
            await eventually(lambda: service.writer.saved == 1)
        await agent.stop()
    [record] = CallStore(tmp_path / "calls.db").calls()
    assert record.caller_number == "13700000003"
    [refused] = [e for e in logs if e["event"].startswith("config not reloaded")]
    assert refused["log_level"] == "error"
    assert str(config) in refused["error"] and "budget.monthly" in refused["error"]
    assert [e["changed"] for e in logs if e["event"] == "config reloaded"] == [
        ["calls.inbound_contexts"], ["calls.inbound_contexts"]]


async def test_what_needs_a_restart_is_logged_and_keeps_its_old_value(
        tmp_path: Path, write_config, agent_on) -> None:
    async with SimulatedPBX(speed=40, epoch=EPOCH) as pbx:
        config = write_config(port=pbx.port)
        agent = await agent_on(pbx, config)
        service = agent.service
        with structlog.testing.capture_logs() as logs:
            text = config.read_text().replace(str(tmp_path / "calls.db"),
                                              str(tmp_path / "elsewhere.db"))
            config.write_text(text.replace('listen = "127.0.0.1:0"',
                                           'listen = "127.0.0.1:0"\nallow = ["10.0.0.0/8"]'))
            sighup()
            await eventually(lambda: service.reloader.reloads == 1)
        assert service.config.store.path == str(tmp_path / "calls.db")  # the old value stays
        assert service.fastagi is not None and not service.fastagi.allowed("127.0.0.1")
        assert service.client.connected.is_set()
        await pbx.play([short("13600000001")])
        await eventually(lambda: service.writer.saved == 1)
        await agent.stop()
    assert [r.caller_number for r in CallStore(tmp_path / "calls.db").calls()] == ["13600000001"]
    assert not (tmp_path / "elsewhere.db").exists()
    [restart] = [e for e in logs if e["event"].startswith("config change needs a restart")]
    assert restart["key"] == "store.path" and restart["log_level"] == "warning"
    [done] = [e for e in logs if e["event"] == "config reloaded"]
    assert done["changed"] == ["agi.allow"]


async def test_a_changed_ami_secret_needs_a_restart(tmp_path: Path, write_config,
                                                    agent_on) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("botmeter-sim\n")
    secret.chmod(0o600)
    async with SimulatedPBX(speed=40, epoch=EPOCH) as pbx:
        config = write_config(port=pbx.port)
        config.write_text(config.read_text().replace('secret = "botmeter-sim"',
                                                     'secret_file = "ami.secret"'))
        agent = await agent_on(pbx, config)
        with structlog.testing.capture_logs() as logs:
            secret.write_text("another-secret\n")
            sighup()
            await eventually(lambda: agent.service.reloader.reloads == 1)
        assert agent.service.client.settings.secret == "botmeter-sim"
        await agent.stop()
    [restart] = [e for e in logs if e["event"].startswith("config change needs a restart")]
    assert restart["key"] == "ami.secret_file"
    assert "another-secret" not in repr(logs)


def _config(**sections: dict) -> object:
    base = {"agent": {"id": "a"}, "ami": {"username": "u", "secret": "s"},
            "calls": {"inbound_contexts": ["from-pstn"]}, "bot": {"contexts": ["voicebot"]}}
    return parse_config({**base, **sections}, "/etc/botmeter/botmeter.toml")


def test_changed_keys_name_each_key_and_whole_sections() -> None:
    old = _config()
    new = _config(store={"path": "/x.db", "keep_months": 3}, agi={"allow": ["10.0.0.0/8"]},
                  budget={"monthly": "100"})
    assert changed_keys(old, new) == ["agi.allow", "budget", "store.keep_months", "store.path"]
    assert [is_live(k) for k in changed_keys(old, new)] == [True, True, True, False]
    kept = keep_old_values(new, old, ["store.path"])
    assert kept.store.path == old.store.path and kept.store.keep_months == 3
    assert changed_keys(old, kept) == ["agi.allow", "budget", "store.keep_months"]
    assert not is_live("ami.host") and not is_live("http.listen") and is_live("calls")


async def test_plans_added_then_removed_by_reloads(tmp_path: Path, write_config,
                                                  plans_dir: Path, agent_on) -> None:
    db = tmp_path / "calls.db"
    async with SimulatedPBX(speed=40, epoch=EPOCH) as pbx:
        config = write_config(port=pbx.port)
        agent = await agent_on(pbx, config)
        service = agent.service
        assert service.saver is None
        await pbx.play([short("13300000001")])
        await eventually(lambda: plans_of(db) == {None: 1})
        write_config(port=pbx.port, extra=PLANS.format(active="per-call"))
        assert await service.reloader.reload()
        await eventually(lambda: plans_of(db) == {"per-call": 1})  # its period re-rated
        await pbx.play([short("13300000002")])
        await eventually(lambda: plans_of(db) == {"per-call": 2})  # rated as it is stored
        retired = service.rerater
        write_config(port=pbx.port)
        assert await service.reloader.reload()
        assert service.saver is None and service.rerater is None
        assert retired is not None and not retired.alive
        await pbx.play([short("13300000003")])
        await eventually(lambda: plans_of(db) == {"per-call": 2, None: 1})
        await agent.stop()


async def test_an_uplink_changed_by_a_reload_sends_to_the_new_vendor_url(tmp_path: Path) -> None:
    import time

    from botmeter.uplink.receiver import Receiver

    from .test_uplink_cli import free_port
    from .uplink_support import KEY, TOKEN, hourly_calls, write_agent_config

    start = (int(time.time()) // 3600 - 12) * 3600.0  # hours that closed long ago
    with Receiver(tmp_path / "a.db", TOKEN, KEY.encode()) as first, \
            Receiver(tmp_path / "b.db", TOKEN, KEY.encode()) as second:
        config = write_agent_config(tmp_path, first.url, extra="interval_seconds = 1\n")
        config.write_text(config.read_text().replace(
            'secret = "unused"', f'secret = "unused"\nport = {free_port()}')
            + '\n[agi]\nenabled = false\n')
        store = CallStore(tmp_path / "calls.db")
        store.save(hourly_calls(1, 2, start=start))
        service = AgentService(load_config(config))  # no PBX: AMI retries, the uplink runs
        running = asyncio.create_task(service.run())
        try:
            await eventually(lambda: len(first.deliveries()) == 1, timeout=10)
            config.write_text(config.read_text().replace(first.url, second.url))
            assert await service.reloader.reload()
            uplink = service.uplink
            assert uplink is not None  # a tick under the old URL may be under way: let it end
            await eventually(lambda: uplink.settings.url == second.url)
            store.save(hourly_calls(1, 2, start=start + 3 * 3600, prefix="later"))
            await eventually(lambda: len(second.deliveries()) == 1, timeout=10)
        finally:
            service.stop()
            await running
            store.close()
        assert len(first.deliveries()) == 1
        assert second.deliveries()[0]["bucket_start"] == iso_z(start + 3 * 3600)
