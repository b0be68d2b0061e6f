"""Database trouble under a live agent: locked, disk full, the file deleted or replaced, the
writer's backlog at its bound (AMI reading paused), and a start with the database locked.

Real SQLite files, the simulated PBX over loopback, a real HTTP client for /healthz, and a
real `botmeter run` subprocess where a whole process is needed. Every test ends with every
call stored once; the health failed while the trouble lasted and is OK after.

The full disk is SQLite's own page limit (`PRAGMA max_page_count`) on the agent's
connections: a write that needs one more page fails with SQLITE_FULL, "database or disk is
full", the very error SQLite gives for a full disk (ENOSPC), and it clears when the limit is
lifted, deterministically. RLIMIT_FSIZE on a subprocess was the other candidate; Linux
answers a write beyond it with EFBIG, which SQLite reports as a generic "disk I/O error"
(SQLITE_IOERR_WRITE), not as a full disk.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from botmeter.backpressure import MAX_QUEUED, resume_below, should_pause
from botmeter.cli import EXIT_NOT_STORED
from botmeter.config import HttpSection, load_config
from botmeter.demo import demo_config
from botmeter.doctor.findings import FAIL, OK
from botmeter.doctor.storing import check_storing
from botmeter.health.verdict import problems
from botmeter.pbx.ami_client import AmiClient, AmiSettings
from botmeter.service import AgentService
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import ScriptedCall, mixed_calls
from botmeter.storage.spill import read_spill, spill_path
from botmeter.storage.store import CallStore, StoreError, UnusableDatabase
from botmeter.storage.trouble import Notice, TroubleWatch, classify
from botmeter.storage.writer import RecordWriter

from .helpers import eventually, eventually_sync
from .test_sdnotify import FakeSystemd, _agent_under_systemd
from .test_spill import STOP_SECONDS, _run, _stop, record

SECRET = "trouble-secret"


# -- the agent in this process ----------------------------------------------------------------

@asynccontextmanager
async def live_agent(pbx: SimulatedPBX, db: Path, *, max_queued: int = MAX_QUEUED,
                     store_factory: Callable[[], CallStore] | None = None,
                     ) -> AsyncIterator[AgentService]:
    """An agent attached to `pbx`, recording into `db`, its /healthz on an ephemeral port."""
    config = demo_config(pbx.port, SECRET, db)
    config = config.model_copy(update={
        "http": HttpSection(listen="127.0.0.1:0"),
        "store": config.store.model_copy(update={"max_queued": max_queued})})
    service = AgentService(config, store_path=db, clock=pbx.now, store_factory=store_factory)
    running = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.client.connected.wait(), 10)
        assert service.fastagi is not None and service.health is not None
        pbx.agi_port = service.fastagi.port
        yield service
    finally:
        service.stop()
        await running


def failing(service: AgentService) -> dict[str, str]:
    """What /healthz would name now (read in memory, as its handler does)."""
    assert service.health is not None
    return problems(service.health.probe.counters(), service.health.limits)


async def get(service: AgentService, path: str) -> httpx.Response:
    assert service.health is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.health.port}") as http:
        return await http.get(path)


async def metric(service: AgentService, name: str, **labels: str) -> float:
    page = (await get(service, "/metrics")).text
    return next(s.value for family in text_string_to_metric_families(page)
                for s in family.samples if s.name == name and s.labels == labels)


def stored_calls(db: Path) -> int | None:
    """How many calls the database at `db` holds (None: none there, or not laid out yet)."""
    try:
        store = CallStore(db, create=False)
    except StoreError:
        return None
    try:
        return store.count()
    finally:
        store.close()


def callers(db: Path) -> list[str]:
    store = CallStore(db, create=False)
    try:
        return sorted(r.caller_number for r in store.calls())
    finally:
        store.close()


def numbers(calls: list[ScriptedCall]) -> list[str]:
    return sorted(c.caller_number for c in calls)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


class Holder:
    """Another process's connection holding the database's write lock (`BEGIN EXCLUSIVE`,
    as `sqlite3` does for a long transaction)."""

    def __init__(self, db: Path) -> None:
        self.conn: sqlite3.Connection | None = sqlite3.connect(db, isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        """Roll back and close (once; again does nothing)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.execute("ROLLBACK")
            conn.close()


class FillingDisk:
    """A disk that fills up: every connection the agent opens on `path` is limited, while
    `full`, to the pages the database has now (`PRAGMA max_page_count`), so that a write
    needing a new page fails with SQLITE_FULL. The limit is set in the connection's own
    thread, before each save."""

    UNLIMITED = 4_294_967_294

    def __init__(self, path: Path) -> None:
        self.path = path
        self.full = False

    def open(self) -> CallStore:
        disk = self

        class OnThisDisk(CallStore):
            def save(self, records, charges=None):  # type: ignore[no-untyped-def]
                conn = self.db.conn
                pages = conn.execute("PRAGMA page_count").fetchone()[0] if disk.full else None
                conn.execute(f"PRAGMA max_page_count = {pages or disk.UNLIMITED}")
                return super().save(records, charges)

        return OnThisDisk(self.path)


async def trouble_then_recovery(service: AgentService, pbx: SimulatedPBX, calls: list[ScriptedCall],
                                kind: str, start: Callable[[], object],
                                end: Callable[[], object]) -> None:
    """Half the calls stored, the trouble started, the other half played: health fails naming
    it, a metric says its kind; the trouble ended: every call stored, health OK."""
    first, second = calls[: len(calls) // 2], calls[len(calls) // 2:]
    await pbx.play(first, concurrency=8)
    await eventually(lambda: service.writer.saved == len(first), timeout=15)
    start()
    try:
        await pbx.play(second, concurrency=8)
        await eventually(lambda: "database" in failing(service), timeout=20)
        answer = await get(service, "/healthz")
        assert answer.status_code == 503, answer.text
        assert "storing calls has failed for" in answer.json()["reasons"]["database"]
        said = check_storing(answer.json())  # what `botmeter doctor` prints of it
        assert said.status == FAIL and "storing calls has failed" in said.detail
        assert await metric(service, "botmeter_database_trouble", kind=kind) == 1
        assert await metric(service, "botmeter_health_problem", component="database") == 1
        assert await metric(service, "botmeter_database_failing_seconds") >= 3
        assert service.writer.saved < len(calls) and service.client.connected.is_set()
    finally:
        end()
    await eventually(lambda: service.writer.saved == len(calls), timeout=20)
    await eventually(lambda: not failing(service), timeout=10)
    answer = await get(service, "/healthz")
    assert answer.status_code == 200 and check_storing(answer.json()).status == OK
    assert await metric(service, "botmeter_database_trouble", kind=kind) == 0


def one_episode(logs: list[dict[str, Any]], kind: str, db: Path) -> None:
    """One line when the trouble started (what, where, calls waiting), one when it cleared."""
    [began] = events(logs, "storing calls failed; retrying")
    assert began["trouble"] == kind and began["db"] == str(db) and began["calls_waiting"] >= 1
    assert began["log_level"] == "error"
    [ended] = events(logs, "storing calls works again")
    assert ended["trouble"] == kind and ended["calls_stored"] >= 1
    assert ended["failed_seconds"] >= 3


async def test_locked_mid_load_health_fails_during_and_every_call_is_stored_after(tmp_path):
    db = tmp_path / "calls.db"
    calls = mixed_calls(20, seed=41)
    holder: list[Holder] = []
    with structlog.testing.capture_logs() as logs:
        async with SimulatedPBX(speed=50, secret=SECRET) as pbx, live_agent(pbx, db) as service:
            await trouble_then_recovery(service, pbx, calls, "locked",
                                        start=lambda: holder.append(Holder(db)),
                                        end=lambda: holder[0].release())
    assert callers(db) == numbers(calls)  # each once: call_id is the key
    one_episode(logs, "locked", db)
    assert "locked" in events(logs, "storing calls failed; retrying")[0]["error"]


async def test_disk_full_mid_load_health_fails_during_and_every_call_is_stored_after(tmp_path):
    db = tmp_path / "calls.db"
    disk = FillingDisk(db)
    calls = mixed_calls(60, seed=43)  # enough for the pages' free space to run out

    def fill() -> None:
        disk.full = True

    def free() -> None:
        disk.full = False

    with structlog.testing.capture_logs() as logs:
        async with SimulatedPBX(speed=50, secret=SECRET) as pbx, \
                live_agent(pbx, db, store_factory=disk.open) as service:
            await trouble_then_recovery(service, pbx, calls, "disk_full", start=fill, end=free)
    assert callers(db) == numbers(calls)
    one_episode(logs, "disk_full", db)
    assert events(logs, "storing calls failed; retrying")[0]["error"] == \
        "database or disk is full"


async def test_a_database_deleted_under_the_agent_is_created_anew_with_the_calls_after(tmp_path):
    db = tmp_path / "calls.db"
    calls = mixed_calls(16, seed=47)
    before, after = calls[:8], calls[8:]
    with structlog.testing.capture_logs() as logs:
        async with SimulatedPBX(speed=50, secret=SECRET) as pbx, live_agent(pbx, db) as service:
            await pbx.play(before, concurrency=8)
            await eventually(lambda: service.writer.saved == 8, timeout=15)
            os.unlink(db)  # someone removes it; its -wal and -shm stay
            await pbx.play(after, concurrency=8)
            await eventually(lambda: service.writer.saved == 16, timeout=15)
            assert not failing(service)
    assert callers(db) == numbers(after)  # the new file: the calls after, none lost
    assert stat.S_IMODE(db.stat().st_mode) == 0o600  # created as at a first start
    [line] = events(logs, "database file deleted under the agent; storing calls in a new one "
                          "at its path")
    assert line["db"] == str(db) and line["log_level"] == "error"
    assert events(logs, "database opened anew at its path; calls are stored there")


def test_a_replaced_file_is_noticed_while_idle_and_the_old_one_keeps_its_calls(tmp_path):
    db, aside, other = tmp_path / "calls.db", tmp_path / "moved.db", tmp_path / "other.db"
    theirs = CallStore(other)
    theirs.save([record("theirs")])
    theirs.close()  # checkpointed into its file: only the file is moved in
    writer = RecordWriter(lambda: CallStore(db), check_every=0.05)
    writer.start()
    try:
        writer.submit(record("before"))
        eventually_sync(lambda: writer.saved == 1)
        with structlog.testing.capture_logs() as logs:
            os.rename(db, aside)  # moved away, and another database put in its place
            os.rename(other, db)
            eventually_sync(lambda: events(logs, "database opened anew at its path; calls are "
                                                 "stored there"))  # no call needed
            writer.submit(record("after", 1_795_000_100.0))
            eventually_sync(lambda: writer.saved == 2)
    finally:
        writer.close()
    assert sorted(r.call_id for r in CallStore(db).calls()) == ["after", "theirs"]
    # the old file got its last commits before it was let go, though its -wal stayed behind
    assert [r.call_id for r in CallStore(aside).calls()] == ["before"]
    [line] = events(logs, "database file replaced by another file under the agent; storing "
                          "calls in a new one at its path")
    assert line["db"] == str(db)


def test_a_deleted_file_is_recreated_while_idle(tmp_path):
    db = tmp_path / "calls.db"
    writer = RecordWriter(lambda: CallStore(db), check_every=0.05)
    writer.start()
    try:
        os.unlink(db)
        eventually_sync(lambda: stored_calls(db) == 0)  # no call needed
    finally:
        writer.close()


async def test_the_watchdog_is_fed_while_the_database_is_locked_and_the_status_says_why(
        tmp_path, monkeypatch):
    db = tmp_path / "calls.db"
    fake = FakeSystemd()
    try:
        async with _agent_under_systemd(monkeypatch, fake, db) as (pbx, service):
            await eventually(lambda: fake.seen("READY"))
            holder = Holder(db)
            try:
                await pbx.play([ScriptedCall("13900000002", "", "handled", 1.0, 2.0)])
                await eventually(lambda: fake.seen("STATUS", "storing calls failing (locked)"),
                                 timeout=15)
                pings = service.supervisor.pings
                await eventually(lambda: service.supervisor.pings >= pings + 3)
                assert service.writer.failing is not None  # still locked: pinged all the same
                assert not fake.seen("STATUS", "unhealthy")
            finally:
                holder.release()
            await eventually(lambda: service.writer.saved == 1, timeout=15)
    finally:
        fake.close()


# -- back-pressure ----------------------------------------------------------------------------

def test_sources_pause_at_the_bound_and_resume_below_half_of_it():
    assert not should_pause(False, 9, 10) and should_pause(False, 10, 10)
    assert should_pause(True, 5, 10) and not should_pause(True, 4, 10)
    assert resume_below(10) == 5 and resume_below(2) == 1


@pytest.mark.both_loops
async def test_at_the_bound_ami_is_not_read_until_the_backlog_drains_and_no_call_is_lost(
        tmp_path):
    db = tmp_path / "calls.db"
    calls = mixed_calls(40, seed=53)
    with structlog.testing.capture_logs() as logs:
        async with SimulatedPBX(speed=50, secret=SECRET) as pbx, \
                live_agent(pbx, db, max_queued=3) as service:
            holder = Holder(db)
            try:
                await pbx.play(calls, concurrency=10)
                await eventually(lambda: service.client.reading_paused, timeout=20)
                # every call has ended at the PBX; the agent, not reading, has not seen them
                assert service.recorder.records < len(calls)
                assert service.writer.queued() >= 3 and service.writer.saved == 0
                assert failing(service)["writer"].startswith(f"{service.writer.queued()} calls")
                assert await metric(service, "botmeter_ami_reading_paused") == 1
                assert await metric(service, "botmeter_writer_queue_bound") == 3
            finally:
                holder.release()
            await eventually(lambda: service.writer.saved == len(calls), timeout=30)
            await eventually(lambda: not service.client.reading_paused, timeout=10)
            assert service.client.sessions == 1  # read late, never reconnected
            await eventually(lambda: not failing(service), timeout=10)
    assert callers(db) == numbers(calls)
    paused = events(logs, "calls waiting to be stored reached [store] max_queued: AMI reading "
                          "paused")
    resumed = events(logs, "calls waiting to be stored below the low-water mark: AMI reading "
                           "resumed")
    assert paused and len(paused) == len(resumed)
    assert paused[0]["max_queued"] == 3 and paused[0]["resume_below"] == 1


async def test_a_session_lost_while_paused_is_reconnected_once_reading_resumes(tmp_path):
    db = tmp_path / "calls.db"
    calls = mixed_calls(30, seed=59)
    early, later = calls[:24], calls[24:]
    with structlog.testing.capture_logs() as logs:
        async with SimulatedPBX(speed=50, secret=SECRET) as pbx, \
                live_agent(pbx, db, max_queued=3) as service:
            holder = Holder(db)
            try:
                await pbx.play(early, concurrency=8)
                await eventually(lambda: service.client.reading_paused, timeout=20)
                pbx.drop_clients()  # Asterisk gives up on a session it cannot write to
            finally:
                holder.release()
            await eventually(lambda: service.client.sessions == 2, timeout=20)
            await eventually(lambda: service.client.connected.is_set(), timeout=10)
            stored = service.writer.saved
            await pbx.play(later, concurrency=6)
            await eventually(lambda: service.writer.saved == stored + len(later), timeout=20)
    assert set(numbers(later)) <= set(callers(db))
    assert events(logs, "ami detached") and events(logs, "ami attached")[1:]


async def test_no_session_is_opened_while_reading_is_paused(tmp_path):
    async with SimulatedPBX(speed=50, secret=SECRET) as pbx:
        client = AmiClient(AmiSettings("127.0.0.1", pbx.port, "botmeter", SECRET),
                           lambda event: None)
        client.pause_reading()  # e.g. the calls closed by a reconnect's snapshot filled it
        with structlog.testing.capture_logs() as logs:
            running = asyncio.create_task(client.run())
            try:
                await eventually(lambda: events(logs, "ami session waits until reading resumes "
                                                      "(calls waiting to be stored)"))
                assert pbx.clients == 0 and not client.connected.is_set()
                client.resume_reading()
                await eventually(lambda: client.connected.is_set() and pbx.clients == 1)
            finally:
                await client.stop()
                await running


# -- start and stop with the database unavailable ---------------------------------------------

def _http_port(output) -> int:  # type: ignore[no-untyped-def]
    [line] = [e for e in output.logs() if e.get("event") == "http listening"]
    return int(line["port"])


def _healthz(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


async def test_started_with_the_database_locked_the_agent_stays_up_and_stores_once_free(
        tmp_path, write_config):
    calls = mixed_calls(8, seed=61)
    async with SimulatedPBX(speed=50, secret="botmeter-sim") as pbx:
        config = write_config(port=pbx.port)
        db = load_config(config).store_path()
        holder = Holder(db)  # a new file, locked before botmeter could lay it out
        proc, output = _run(config)
        try:
            await eventually(lambda: pbx.clients == 1, timeout=30)  # started all the same
            await eventually(lambda: output.has("http listening"), timeout=10)
            port = _http_port(output)
            await pbx.play(calls, concurrency=8)
            await eventually(lambda: _healthz(port).status_code == 503, timeout=20)
            reasons = _healthz(port).json()["reasons"]
            assert "locked" in reasons["database"], reasons
            assert proc.poll() is None
            holder.release()
            await eventually(lambda: stored_calls(db) == len(calls), timeout=30)
            assert callers(db) == numbers(calls)
            await eventually(lambda: _healthz(port).status_code == 200, timeout=15)
            took = await _stop(proc, output)
        finally:
            holder.release()
            if proc.poll() is None:
                proc.kill()
        text = "\n".join(output.lines)
        assert proc.returncode == 0 and took < STOP_SECONDS, text
        assert "Traceback" not in text
        [unavailable] = [e for e in output.logs() if e["event"].startswith(
            "database unavailable at start")]
        assert unavailable["trouble"] == "locked" and unavailable["db"] == str(db)
        assert output.has("storing calls works again")


async def test_stopped_before_the_locked_database_ever_opened_the_calls_are_spilled(
        tmp_path, write_config):
    calls = mixed_calls(6, seed=67)
    async with SimulatedPBX(speed=50, secret="botmeter-sim") as pbx:
        config = write_config(port=pbx.port)
        db = load_config(config).store_path()
        spill = spill_path(db)
        holder = Holder(db)
        proc, output = _run(config)
        try:
            await eventually(lambda: pbx.clients == 1, timeout=30)
            await pbx.play(calls, concurrency=6)
            await eventually(lambda: output.has("storing calls failed; retrying"), timeout=20)
            took = await _stop(proc, output)
        finally:
            holder.release()
            if proc.poll() is None:
                proc.kill()
        text = "\n".join(output.lines)
        assert proc.returncode == EXIT_NOT_STORED and took < STOP_SECONDS, text
        assert sorted(r.caller_number for r in read_spill(spill).records) == numbers(calls)

        proc, output = _run(config)  # the next start, the lock gone: the spill is stored
        try:
            await eventually(lambda: not spill.exists(), timeout=20)
            await _stop(proc, output)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, "\n".join(output.lines)
    assert callers(db) == numbers(calls)


def test_errors_no_retry_mends_are_permanent_the_others_not(tmp_path):
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    with pytest.raises(UnusableDatabase, match="is a folder"):
        CallStore(folder)
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(UnusableDatabase, match="not a botmeter database"):
        CallStore(foreign)
    locked = tmp_path / "locked.db"
    holder = Holder(locked)
    try:
        with pytest.raises(Exception) as refused:
            store = CallStore(locked)
            store.close()
    finally:
        holder.release()
    assert not getattr(refused.value, "permanent", True) and classify(refused.value) == "locked"


def test_the_kind_of_trouble_comes_from_what_sqlite_or_the_os_said(tmp_path):
    db = tmp_path / "k.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError) as full:
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    conn.close()
    assert classify(full.value) == "disk_full"
    assert classify(OSError(errno.ENOSPC, "No space left on device")) == "disk_full"
    assert classify(OSError(errno.EACCES, "Permission denied")) == "not_writable"
    assert classify(sqlite3.OperationalError("attempt to write a readonly database")) == \
        "not_writable"
    assert classify(RuntimeError("something else")) == "error"


def test_trouble_is_said_when_it_starts_changes_or_has_lasted_a_minute_and_when_it_clears():
    watch = TroubleWatch(remind_every=60)
    assert watch.failed("locked", "database is locked", began=100.0, now=105.0) is Notice.STARTED
    assert watch.failed("locked", "database is locked", began=106.0, now=150.0) is None
    assert watch.failed("locked", "database is locked", began=160.0, now=165.0) is \
        Notice.REMINDER
    assert watch.failed("locked", "database is locked", began=166.0, now=200.0) is None
    assert watch.failed("disk_full", "database or disk is full", 201.0, 201.5) is Notice.CHANGED
    ended = watch.cleared()
    assert ended is not None and ended.since == 100.0 and ended.failures == 5
    assert ended.seconds(220.0) == 120.0 and ended.kind == "disk_full"
    assert watch.cleared() is None and watch.current is None


def test_the_log_lines_are_json_objects_a_script_can_pick(tmp_path):
    """The trouble's lines carry the fields the runbook greps for (docs/operations.md)."""
    db = tmp_path / "calls.db"
    holder_store = CallStore(db)
    holder_store.close()
    writer = RecordWriter(lambda: CallStore(db))
    writer.start()
    holder = Holder(db)
    try:
        with structlog.testing.capture_logs() as logs:
            writer.submit(record("r1"))
            eventually_sync(lambda: events(logs, "storing calls failed; retrying"), timeout=15)
            holder.release()
            eventually_sync(lambda: writer.saved == 1, timeout=15)
    finally:
        holder.release()
        writer.close()
    [began] = events(logs, "storing calls failed; retrying")
    assert set(began) >= {"db", "trouble", "error", "calls_waiting", "failing_seconds"}
    json.dumps(began)  # plain values only
