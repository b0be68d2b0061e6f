"""Calls that cannot be stored before a stop go to the spill file; the next start stores them once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from botmeter.cli import EXIT_NOT_STORED, main
from botmeter.config import load_config
from botmeter.sim.pbx import SimulatedPBX
from botmeter.sim.scenarios import mixed_calls
from botmeter.storage.spill import (
    append_spill,
    clear_spill,
    decode_record,
    encode_record,
    read_spill,
    spill_path,
)
from botmeter.storage.store import CallStore
from botmeter.storage.writer import RecordWriter, load_spill
from botmeter.tracking.record import OUTCOMES, CallRecord, ModuleUsage

from .helpers import eventually, eventually_sync

#: the stop's contract (issue 13): within 5 s with `run`'s default --stop-timeout, spilling too
STOP_SECONDS = 5.0


def record(call_id: str, offered: float = 1_795_000_000.0, **modules: str) -> CallRecord:
    return CallRecord(
        call_id=call_id, linkedid=call_id, caller_number="139", caller_name="张三",
        dialed_number="4000", offered_at=offered, bot_answered_at=offered + 1.5,
        bot_ended_at=offered + 10.25, transferred_at=None, human_answered_at=None,
        ended_at=offered + 11.0, outcome="handled", transfer_target=None, hangup_cause=16,
        modules={m: ModuleUsage(Decimal(q), "seconds") for m, q in modules.items()},
    )


# -- the format ------------------------------------------------------------------------------

_times = st.floats(min_value=946_684_800.0, max_value=4_102_444_799.0)
_text = st.text(max_size=12)
_records = st.builds(
    CallRecord,
    call_id=_text, linkedid=_text, caller_number=st.none() | _text,
    caller_name=st.none() | _text, dialed_number=st.none() | _text,
    offered_at=_times, bot_answered_at=st.none() | _times, bot_ended_at=st.none() | _times,
    transferred_at=st.none() | _times, human_answered_at=st.none() | _times, ended_at=_times,
    outcome=st.sampled_from(OUTCOMES), transfer_target=st.none() | _text,
    hangup_cause=st.none() | st.integers(-(2 ** 63), 2 ** 63 - 1),
    modules=st.dictionaries(_text, st.builds(
        ModuleUsage, st.decimals(allow_nan=False, allow_infinity=False), _text), max_size=4),
    source=st.sampled_from(["ami", "fastagi"]),
)


@given(_records)
def test_a_spilled_record_reads_back_exactly(original):
    line = encode_record(original)
    assert "\n" not in line
    back = decode_record(line)
    assert back == original
    assert [repr(getattr(back, f)) for f in CallRecord._fields if f != "modules"] == [
        repr(getattr(original, f)) for f in CallRecord._fields if f != "modules"]
    assert {m: (str(u.quantity), u.unit) for m, u in back.modules.items()} == {
        m: (str(u.quantity), u.unit) for m, u in original.modules.items()}  # 1.50 stays 1.50


def test_spill_file_is_private_and_loads_after_a_torn_line(tmp_path):
    path = tmp_path / "calls.db.spill.jsonl"
    append_spill(path, [record("a", asr="1.50"), record("b")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with path.open("ab") as torn:  # a crash in the middle of an append
        torn.write(encode_record(record("c")).encode()[:40])
    store = CallStore(tmp_path / "calls.db")
    assert load_spill(store, path, lambda calls: bool(store.save(calls))) == 2
    assert not path.exists()
    assert sorted(r.call_id for r in store.calls()) == ["a", "b"]
    assert store.calls()[0].modules["asr"].quantity.as_tuple() == Decimal("1.50").as_tuple()
    [row] = store.db.query("SELECT call_id, reason FROM rejected")
    assert row["call_id"] is None and "line 3 is not a call" in row["reason"]


def test_a_load_cut_short_is_done_again_and_stores_each_call_once(tmp_path):
    path = tmp_path / "calls.db.spill.jsonl"
    calls = [record(f"c{i}", 1_795_000_000.0 + i) for i in range(10)]
    append_spill(path, calls)
    store = CallStore(tmp_path / "calls.db")

    def crash_halfway(records: list[CallRecord]) -> bool:
        store.save(records[:5])
        raise KeyboardInterrupt  # killed in the middle of the load

    with pytest.raises(KeyboardInterrupt):
        load_spill(store, path, crash_halfway)
    assert path.exists() and store.count() == 5
    assert load_spill(store, path, lambda records: bool(store.save(records))) == 10
    assert not path.exists()
    assert store.count() == 10
    assert sorted(r.call_id for r in store.calls()) == sorted(c.call_id for c in calls)


def test_lines_appended_while_loading_are_kept(tmp_path):
    path = tmp_path / "x.spill.jsonl"
    append_spill(path, [record("old")])
    contents = read_spill(path)
    append_spill(path, [record("new")])  # another process spills meanwhile
    clear_spill(path, contents)
    assert [r.call_id for r in read_spill(path).records] == ["new"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- the writer --------------------------------------------------------------------------------

def test_writer_spills_what_a_locked_database_keeps_out_by_the_deadline(tmp_path):
    db = tmp_path / "locked.db"
    spill = spill_path(db)
    assert spill == tmp_path / "locked.db.spill.jsonl"
    writer = RecordWriter(lambda: CallStore(db), spill=spill)
    writer.start()
    writer.submit(record("before"))
    eventually_sync(lambda: writer.saved == 1)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for i in range(5):
            writer.submit(record(f"locked{i}", 1_795_000_100.0 + i))
        start = time.monotonic()
        writer.close(time.monotonic() + 1.5)
        assert time.monotonic() - start < 1.5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert writer.spilled == 5 and writer.lost == 0
    assert sorted(r.call_id for r in read_spill(spill).records) == [f"locked{i}" for i in range(5)]

    again = RecordWriter(lambda: CallStore(db), spill=spill)  # the next start
    again.start()
    eventually_sync(lambda: again.recovered == 5)
    again.close()
    store = CallStore(db)
    assert store.count() == 6 and not spill.exists()
    assert sorted(r.call_id for r in store.calls()) == ["before", *(f"locked{i}" for i in range(5))]


def test_writer_spills_what_a_full_disk_keeps_out_and_logs_it(tmp_path):
    db = tmp_path / "full.db"

    class Full(CallStore):
        def save(self, records, charges=None):  # type: ignore[override]
            raise sqlite3.OperationalError("database or disk is full")

    errors: list[int] = []
    writer = RecordWriter(lambda: Full(db), spill=spill_path(db),
                          on_error=lambda exc, n: errors.append(n))
    with structlog.testing.capture_logs() as logs:
        writer.start()
        for i in range(30):
            writer.submit(record(f"f{i}", 1_795_000_000.0 + i))
        eventually_sync(lambda: errors)
        start = time.monotonic()
        writer.close(time.monotonic() + 1.5)
        assert time.monotonic() - start < 1.5
    assert writer.spilled == 30 and writer.rejected == 0 and CallStore(db).count() == 0
    assert len(read_spill(tmp_path / "full.db.spill.jsonl").records) == 30
    [line] = [e for e in logs if e["event"].startswith("calls not stored before stop")]
    assert line["calls"] == 30 and line["spill_file"].endswith("full.db.spill.jsonl")


def test_without_a_spill_file_unstored_calls_are_logged_record_by_record(tmp_path):
    class Locked(CallStore):
        def save(self, records, charges=None):  # type: ignore[override]
            raise sqlite3.OperationalError("database is locked")

    writer = RecordWriter(lambda: Locked(":memory:"))
    with structlog.testing.capture_logs() as logs:
        writer.start()
        writer.submit(record("m1", asr="2.50"))
        writer.close(time.monotonic() + 1.2)
    assert writer.lost == 1 and writer.spilled == 0
    [call] = [e for e in logs if e["event"] == "call not stored"]
    assert decode_record(call["record"]) == record("m1", asr="2.50")


def test_replay_of_empty_input_stores_the_spilled_calls(tmp_path, write_config):
    config = write_config()
    db = load_config(config).store_path()
    spill = spill_path(db)
    assert spill is not None
    append_spill(spill, [record("s1"), record("s2", 1_795_000_050.0)])
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(config), "replay", "-"], input=b"")
    assert result.exit_code == 0, result.output
    assert "calls_from_spill=2" in result.stdout
    assert not spill.exists() and sorted(r.call_id for r in CallStore(db).calls()) == ["s1", "s2"]


# -- the agent, stopped while the database is locked -------------------------------------------

class _Output:
    """A subprocess's combined output, read line by line in a thread."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:  # type: ignore[no-untyped-def]
        for raw in stream:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def logs(self) -> list[dict]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def has(self, event: str) -> bool:
        return any(e.get("event") == event for e in self.logs())

    def finish(self) -> None:
        self._thread.join(5)


def _run(config: Path) -> tuple[subprocess.Popen[bytes], _Output]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "botmeter.cli", "--config", str(config), "--log-json", "run"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, _Output(proc)


async def _stop(proc: subprocess.Popen[bytes], output: _Output) -> float:
    """SIGTERM; how long the process took to exit."""
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(proc.wait, 30)
    output.finish()
    return time.monotonic() - start


async def test_sigterm_while_the_database_is_locked_spills_and_the_next_start_stores_once(
        tmp_path, write_config):
    calls = mixed_calls(12, seed=3)
    first, second = calls[:6], calls[6:]
    assert len({c.caller_number for c in calls}) == 12
    async with SimulatedPBX(speed=50, secret="botmeter-sim") as pbx:
        config = write_config(port=pbx.port)
        db = load_config(config).store_path()
        spill = spill_path(db)
        assert spill is not None
        proc, output = _run(config)
        holder = None
        try:
            await eventually(lambda: pbx.clients == 1, timeout=15)
            await pbx.play(first, concurrency=6)
            await eventually(lambda: db.exists() and CallStore(db).count() == 6)
            holder = sqlite3.connect(db, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")  # another process holds the database
            await pbx.play(second, concurrency=6)
            await eventually(lambda: output.has("storing calls failed; retrying"), timeout=15)
            took = await _stop(proc, output)
        finally:
            if proc.poll() is None:
                proc.kill()
            if holder is not None:
                holder.execute("ROLLBACK")
                holder.close()
        text = "\n".join(output.lines)
        assert took < STOP_SECONDS, text  # the default stop, spilling included
        assert proc.returncode == EXIT_NOT_STORED, text
        assert "Traceback" not in text
        [spilled] = [e for e in output.logs()
                     if e["event"] == "calls not stored before stop; spilled for the next start"]
        assert spilled["calls"] == 6 and spilled["spill_file"] == str(spill)
        assert stat.S_IMODE(spill.stat().st_mode) == 0o600
        in_spill = sorted(r.caller_number for r in read_spill(spill).records)
        assert in_spill == sorted(c.caller_number for c in second)
        assert CallStore(db).count() == 6

        proc, output = _run(config)  # the next start, the lock released
        try:
            await eventually(lambda: not spill.exists() and CallStore(db).count() == 12,
                             timeout=15)
            await _stop(proc, output)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, "\n".join(output.lines)
    stored = CallStore(db).calls()
    assert sorted(r.caller_number for r in stored) == sorted(c.caller_number for c in calls)
    assert len({r.call_id for r in stored}) == 12
    [loaded] = [e for e in output.logs() if e["event"] == "calls from the spill file stored"]
    assert loaded["calls"] == 6
