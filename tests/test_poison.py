"""One bad value never stops recording: poison AMI values from outside, records SQLite refuses."""

from __future__ import annotations

import asyncio
import json
import math
import re
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from botmeter.cli import EXIT_NOT_STORED, main
from botmeter.demo import demo_config
from botmeter.pbx.events import ChannelHungUp, from_ami
from botmeter.service import AgentService
from botmeter.storage.guard import store_unavailable
from botmeter.storage.store import CallStore
from botmeter.storage.writer import RecordWriter
from botmeter.tracking.record import CallRecord, ModuleUsage

from .conftest import LAB_CAPTURE
from .fake_ami import start_fake_ami
from .helpers import eventually

THIRTY_DIGITS = "123456789012345678901234567890"
#: (header, poison) put on the caller channel's Hangup (the one that ends the call) of four
#: different calls of the lab capture
POISONS = [("Timestamp", "nan"), ("Timestamp", "inf"), ("Timestamp", "1e20"),
           ("Cause", THIRTY_DIGITS)]
CALLER_CHANNELS = [b"1795706734.0", b"1795706735.3", b"1795706738.5", b"1795706741.6"]


def _poisoned_capture() -> bytes:
    """The lab capture (13 calls) with each poison on the caller's Hangup of a different call."""
    frames = LAB_CAPTURE.read_bytes().split(b"\r\n\r\n")
    targets = dict(zip(CALLER_CHANNELS, POISONS, strict=True))
    hit = 0
    for i, frame in enumerate(frames):
        lines = frame.split(b"\r\n")
        uniqueid = next((line[10:] for line in lines if line.startswith(b"Uniqueid: ")), None)
        if lines[0] != b"Event: Hangup" or uniqueid not in targets:
            continue
        header, value = (part.encode() for part in targets[uniqueid])
        frames[i] = b"\r\n".join(
            header + b": " + value if line.startswith(header + b": ") else line for line in lines)
        hit += 1
    assert hit == len(POISONS)
    return b"\r\n\r\n".join(frames)


def _json_lines(text: str) -> list[dict]:
    """Log lines of a command run with --log-json (every line must be one)."""
    return [json.loads(line) for line in text.splitlines()]


def _refused(logs: list[dict]) -> list[tuple[str, str]]:
    return [(e["header"], e["value"]) for e in logs if e["event"] == "bad AMI header value refused"]


def record(call_id: str, offered: float = 1_795_000_000.0, cause: int | None = 16,
           **modules: str) -> CallRecord:
    return CallRecord(
        call_id=call_id, linkedid=call_id, caller_number="139", caller_name="张三",
        dialed_number="4000", offered_at=offered, bot_answered_at=offered + 1.5,
        bot_ended_at=offered + 10.25, transferred_at=None, human_answered_at=None,
        ended_at=offered + 11.0, outcome="handled", transfer_target=None, hangup_cause=cause,
        modules={m: ModuleUsage(Decimal(q), "seconds") for m, q in modules.items()},
    )


# -- the event boundary -------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e20", "-5", "0", "946684799.9",
                                 "4102444800", "1_0", "garbage"])
def test_an_unbelievable_timestamp_becomes_the_agents_clock(raw):
    seen = []
    event = from_ami({"Event": "Hangup", "Uniqueid": "1.1", "Linkedid": "1.1", "Timestamp": raw,
                      "Cause": "16"}, 1_795_000_000.1234, lambda *args: seen.append(args))
    assert isinstance(event, ChannelHungUp)
    assert event.ts == 1_795_000_000.123 and event.cause == 16
    assert seen == [("Hangup", "Timestamp", raw, "the agent's clock")]


@pytest.mark.parametrize("raw", [THIRTY_DIGITS, "-1", "256", "1e3", "x", "9" * 5000])
def test_a_cause_out_of_range_is_unknown(raw):
    seen = []
    event = from_ami({"Event": "Hangup", "Uniqueid": "1.1", "Linkedid": "1.1", "Cause": raw,
                      "Timestamp": "1795000000.5"}, 0.0, lambda *args: seen.append(args))
    assert isinstance(event, ChannelHungUp) and event.cause is None and event.ts == 1_795_000_000.5
    assert [(header, value) for _, header, value, _ in seen] == [("Cause", raw)]


def test_a_snapshot_duration_beyond_a_year_is_zero():
    seen = []
    event = from_ami({"Event": "CoreShowChannel", "Uniqueid": "1.1", "Linkedid": "1.1",
                      "Duration": "99999999:00:00", "Timestamp": "1795000000"}, 0.0,
                     lambda *args: seen.append(args))
    assert event.duration_seconds == 0.0  # type: ignore[union-attr]
    assert [header for _, header, _, _ in seen] == ["Duration"]
    fine = from_ami({"Event": "CoreShowChannel", "Uniqueid": "1.1", "Linkedid": "1.1",
                     "Duration": "01:02:03", "Timestamp": "1795000000"}, 0.0)
    assert fine.duration_seconds == 3723.0  # type: ignore[union-attr]


async def test_poison_values_in_a_live_ami_stream_cost_no_call_its_record(tmp_path, lab_expected):
    capture = _poisoned_capture()
    events = capture[capture.index(b"Event: "):]

    async def stream(writer: asyncio.StreamWriter) -> None:
        writer.write(events)
        await writer.drain()

    server, port, _ = await start_fake_ami(after_snapshot=stream)
    db = tmp_path / "poison.db"
    service = AgentService(demo_config(port, "any", db), store_path=db)
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(service.run())
        await eventually(lambda: service.writer.saved >= 13, timeout=20)
        service.stop()
        await running
    server.close()
    stored = CallStore(db).calls()
    assert sorted(r.caller_number for r in stored) == sorted(e["caller_number"] for e in lab_expected)
    assert sorted(_refused(logs)) == sorted(POISONS)  # each bad value logged once, header named
    assert service.client.bad_values.counts == {"Timestamp": 3, "Cause": 1}
    assert service.writer.rejected == 0 and service.client.sessions == 1
    assert not any(e["event"].startswith("storing calls failed") for e in logs)


def test_replay_of_a_poison_capture_stores_every_call_in_one_pass(tmp_path, write_config,
                                                                  lab_expected):
    capture = tmp_path / "poison.ami"
    capture.write_bytes(_poisoned_capture())
    config = write_config()
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(config), "--log-json", "replay", str(capture)])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "calls_recorded=13" in result.stdout and "calls_rejected=0" in result.stdout
    assert "bad_values=4" in result.stdout
    assert sorted(_refused(_json_lines(result.stderr))) == sorted(POISONS)
    listed = runner.invoke(main, ["--config", str(config), "calls", "--format", "json"])
    numbers = sorted(r["caller_number"] for r in json.loads(listed.stdout))
    assert numbers == sorted(e["caller_number"] for e in lab_expected)
    # a refused Timestamp takes the capture's last believable time, never today's clock
    times = [float(t) for t in re.findall(rb"Timestamp: (\d{10}\.\d+)", capture.read_bytes())]
    last = datetime.fromtimestamp(max(times), UTC)
    for call in json.loads(listed.stdout):
        ended = datetime.fromisoformat(call["ended_at"].replace("Z", "+00:00"))
        assert ended <= last and call["total_seconds"] < 600, call


# -- records the store refuses --------------------------------------------------------------

def test_a_record_sqlite_refuses_is_set_aside_and_the_others_are_stored(tmp_path):
    path = tmp_path / "refuse.db"
    good = [record(f"g{i}", 1_795_000_000.0 + i, asr="1.5") for i in range(20)]
    huge = record("huge", cause=10 ** 30)  # Python int too large to convert to SQLite INTEGER
    nan = record("nan", offered=math.nan)  # Invalid value NaN
    far = record("far", offered=1e20)  # year out of range
    batch = [*good[:7], huge, *good[7:15], nan, *good[15:], far]
    writer = RecordWriter(lambda: CallStore(path), spill=None)
    with structlog.testing.capture_logs() as logs:
        writer.start()
        for r in batch:
            writer.submit(r)
        writer.close()
    store = CallStore(path)
    assert sorted(r.call_id for r in store.calls()) == sorted(r.call_id for r in good)
    assert writer.saved == 20 and writer.rejected == 3 and writer.spilled == writer.lost == 0
    rows = {row["call_id"]: row for row in store.db.query("SELECT * FROM rejected")}
    assert set(rows) == {"huge", "nan", "far"}
    assert rows["huge"]["reason"].startswith("OverflowError")
    assert rows["nan"]["reason"].startswith("ValueError")
    assert json.loads(rows["huge"]["record"])["hangup_cause"] == 10 ** 30
    assert json.loads(rows["nan"]["record"])["offered_at"] == "nan"
    assert all(row["rejected_at"].endswith("Z") for row in rows.values())
    refused = [e for e in logs if e["event"].startswith("call refused by the store")]
    assert sorted(e["call_id"] for e in refused) == ["far", "huge", "nan"]  # once each


def test_a_batch_failing_because_the_database_is_unavailable_is_retried_not_rejected(tmp_path):
    path = tmp_path / "busy.db"
    failures = iter([sqlite3.OperationalError("database is locked"),
                     sqlite3.OperationalError("disk I/O error"),
                     sqlite3.OperationalError("database or disk is full")])

    class Flaky(CallStore):
        def save(self, records, charges=None):  # type: ignore[override]
            failure = next(failures, None)
            if failure is not None:
                raise failure
            return super().save(records, charges)

    errors: list[str] = []
    writer = RecordWriter(lambda: Flaky(path), on_error=lambda exc, n: errors.append(str(exc)))
    writer.start()
    writer.submit(record("r1"))
    writer.close()
    assert errors == ["database is locked", "disk I/O error", "database or disk is full"]
    assert [r.call_id for r in CallStore(path).calls()] == ["r1"] and writer.rejected == 0


@pytest.mark.parametrize(("exc", "unavailable"), [
    (sqlite3.OperationalError("database is locked"), True),
    (sqlite3.OperationalError("database or disk is full"), True),
    (OSError(28, "No space left on device"), True),
    (sqlite3.DatabaseError("database disk image is malformed"), True),
    (sqlite3.IntegrityError("NOT NULL constraint failed: calls.offered_at"), False),
    (sqlite3.DataError("string or blob too big"), False),
    (sqlite3.InterfaceError("bad parameter"), False),
    (OverflowError("Python int too large to convert to SQLite INTEGER"), False),
    (ValueError("Invalid value NaN (not a number)"), False),
])
def test_unavailable_database_versus_bad_record(exc, unavailable):
    assert store_unavailable(exc) is unavailable


def test_replay_sets_aside_a_call_past_the_boundary_with_one_line_and_exit_code_3(
        tmp_path, write_config, monkeypatch, lab_expected):
    """If a bad value ever slips past the event boundary, replay still stores the rest."""
    monkeypatch.setattr("botmeter.pbx.events.MAX_CAUSE", 10 ** 40)
    capture = tmp_path / "poison.ami"
    capture.write_bytes(_poisoned_capture())
    plans = Path(__file__).parent.parent / "config" / "plans"
    config = write_config(extra=f'\n[plans]\ndir = "{plans}"\nactive = "combined"\n')
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(config), "replay", str(capture)])
    assert result.exit_code == EXIT_NOT_STORED, result.output
    assert isinstance(result.exception, SystemExit)  # an exit code, no traceback
    assert "calls_recorded=13" in result.stdout and "calls_rejected=1" in result.stdout
    assert "Traceback" not in result.stderr
    [message] = [line for line in result.stderr.splitlines() if line.startswith("botmeter:")]
    assert message.startswith("botmeter: 1 of 13 calls refused by the store, set aside in table "
                              "rejected of ")
    store = CallStore(tmp_path / "calls.db")
    assert store.count() == 12
    [row] = store.db.query("SELECT call_id, reason FROM rejected")
    assert row["reason"].startswith("OverflowError")
    assert row["call_id"] not in {r.call_id for r in store.calls()}
    unrated = list(store.db.query("SELECT call_id FROM calls WHERE cost IS NULL"))
    assert unrated == []  # the period was re-rated from what was stored
