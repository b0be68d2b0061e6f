"""The SQLite store: schema versions and migrations, one row per call, module usage, filters,
the one read path, the record's single field list, exact quantities, the writer."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from botmeter.cli import main
from botmeter.reports.calls import json_text
from botmeter.storage.columns import CALL_COLUMNS, EPOCH_SECONDS, NOT_NULL, call_row
from botmeter.storage.schema import LEGACY_MIGRATIONS, SCHEMA_VERSION, SchemaError
from botmeter.storage.store import CallFilter, CallStore
from botmeter.storage.writer import RecordWriter
from botmeter.tracking.record import FIELDS, CallRecord, ModuleUsage, Origin, iso_utc

ROOT = Path(__file__).resolve().parents[1]


def record(call_id: str = "1.1", offered: float = 1_795_000_000.0, outcome: str = "handled",
           **modules: tuple[str, str]) -> CallRecord:
    return CallRecord(
        call_id=call_id, linkedid=call_id, caller_number="139", caller_name="张三",
        dialed_number="4000", offered_at=offered, bot_answered_at=offered + 1.5,
        bot_ended_at=offered + 10.25, transferred_at=None, human_answered_at=None,
        ended_at=offered + 11.0, outcome=outcome, transfer_target=None, hangup_cause=16,  # type: ignore[arg-type]
        modules={m: ModuleUsage(Decimal(q), u) for m, (q, u) in modules.items()},
    )


def test_schema_is_created_in_wal_mode_with_a_version(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "a.db")
    store.close()
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    CallStore(tmp_path / "a.db").close()  # reopening migrates nothing and keeps working


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "b.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError):
        CallStore(tmp_path / "b.db")


def test_a_call_stored_twice_is_one_row_with_its_modules(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "c.db")
    store.save([record(asr=("12.5", "seconds"), nlu=("2", "requests"))])
    store.save([record(asr=("13", "seconds"))])
    [got] = store.calls()
    assert store.count() == 1
    assert got.modules == {"asr": ModuleUsage(Decimal("13"), "seconds")}
    assert got == record(asr=("13", "seconds"))


def test_round_trip_and_filters(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "d.db")
    store.save([record("1", 1_795_000_000.0), record("2", 1_795_000_100.0, "failed"),
                record("3", 1_795_000_200.0, "abandoned")])
    assert [r.call_id for r in store.calls(CallFilter(since=1_795_000_100.0))] == ["2", "3"]
    assert [r.call_id for r in store.calls(CallFilter(until=1_795_000_100.0))] == ["1"]
    assert [r.call_id for r in store.calls(CallFilter(outcomes=("failed", "abandoned")))] == ["2", "3"]
    assert [r.call_id for r in store.calls(CallFilter(limit=1))] == ["1"]


def test_writer_puts_a_call_on_disk_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    writer = RecordWriter(lambda: CallStore(path))
    writer.start()
    try:
        start = time.monotonic()
        writer.submit(record("w1"))
        reader = CallStore(path)
        while reader.count() == 0 and time.monotonic() - start < 2:
            time.sleep(0.01)
        assert reader.count() == 1 and time.monotonic() - start < 1.0
    finally:
        writer.close()


def test_writer_keeps_retrying_when_storing_fails(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    errors: list[int] = []
    fail = {"left": 2}

    class Flaky(CallStore):
        def save(self, records):  # type: ignore[override]
            if fail["left"]:
                fail["left"] -= 1
                raise sqlite3.OperationalError("database is locked")
            return super().save(records)

    writer = RecordWriter(lambda: Flaky(path), on_error=lambda exc, n: errors.append(n))
    writer.start()
    writer.submit(record("r1"))
    writer.close()
    assert errors == [1, 1]
    assert [r.call_id for r in CallStore(path).calls()] == ["r1"]


def test_a_call_stored_again_replaces_its_module_usage(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "g.db")
    store.save([record("k1", asr=("1", "seconds"), nlu=("2", "requests")), record("k2")])
    store.save([record("k1", asr=("2.5", "seconds"))])
    assert store.count() == 2
    assert list(store.db.conn.execute("SELECT * FROM call_modules")) == [
        ("k1", "asr", "2.5", "seconds")]  # the view: one row per call and module


# -- one decoder for stored times ------------------------------------------------------------

@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_the_sql_time_decoder_is_the_exact_inverse_of_iso_utc(ms: int) -> None:
    conn = sqlite3.connect(":memory:")
    [(decoded,)] = conn.execute(f"SELECT {EPOCH_SECONDS.format('?')}", (iso_utc(ms / 1000),))
    assert decoded == ms / 1000  # the same float the tracker computes: records read back equal
    assert conn.execute(f"SELECT {EPOCH_SECONDS.format('NULL')}").fetchone() == (None,)


def test_times_read_back_equal_to_the_millisecond(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "t.db")
    calls = []
    for i in range(500):
        ms = 1_795_000_000_000 + i * 7_124  # the tracker's times: whole milliseconds
        calls.append(record(f"t{i}")._replace(
            offered_at=ms / 1000, bot_answered_at=(ms + 1_501) / 1000,
            bot_ended_at=(ms + 10_257) / 1000, ended_at=(ms + 11_003) / 1000))
    store.save(calls)
    assert store.calls() == calls
    assert store.calls_ended_between(0, 4e9) == sorted(calls, key=lambda r: (r.ended_at, r.call_id))


# -- one read: a listing is one SELECT ---------------------------------------------------------

def _stored(path: Path, count: int) -> list[CallRecord]:
    from botmeter.rating import PlanBook, rate_calls

    series = PlanBook.load(ROOT / "config" / "plans").series("per-minute")
    calls = [record(f"c{i:03d}", 1_795_000_000.0 + 60 * i, ("handled", "failed")[i % 2],
                    asr=(f"{i}.5", "seconds"), nlu=("3", "requests")) for i in range(count)]
    store = CallStore(path)
    rated = calls[: count // 2]  # half of them rated
    store.save(rated, rate_calls(rated, series))
    store.save(calls[count // 2:])
    store.close()
    return calls


def test_a_listing_is_one_select_that_yields_records_with_their_ratings(tmp_path: Path,
                                                                       ) -> None:
    calls = _stored(tmp_path / "l.db", 40)
    store = CallStore(tmp_path / "l.db")
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    listed = store.listing(CallFilter(outcomes=("handled", "failed")))
    assert len(statements) == 1 and statements[0].startswith("SELECT ")
    assert listed.calls == calls
    ratings = listed.ratings()
    assert set(ratings) == {c.call_id for c in calls[:20]}
    assert ratings == {k: {f: v[f] for f in ("plan_id", "cost", "currency")}
                       for k, v in store.ratings(ratings).items()}


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_the_calls_command_reads_each_row_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               fmt: str) -> None:
    """Traced on the command's own connection: after opening, exactly one statement runs, a
    SELECT, whatever the number of calls."""
    import botmeter.cli

    db = tmp_path / "cli.db"
    _stored(db, 60)
    statements: list[str] = []

    class Traced(CallStore):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.db.conn.set_trace_callback(statements.append)

    monkeypatch.setattr(botmeter.storage.store, "CallStore", Traced)  # the CLI imports it lazily
    result = CliRunner().invoke(main, ["calls", "--db", str(db), "--format", fmt])
    assert result.exit_code == 0, result.output
    assert len(statements) == 1, statements
    assert statements[0].startswith("SELECT ") and "FROM calls" in statements[0]
    if fmt == "json":
        listed = json.loads(result.output)
        assert len(listed) == 60
        assert [r["cost"] is not None for r in listed] == [True] * 30 + [False] * 30
    elif fmt == "csv":
        assert len(list(csv.DictReader(io.StringIO(result.output)))) == 60


# -- the record's fields, listed once ----------------------------------------------------------

def _documented_fields() -> list[tuple[str, str]]:
    """(key, type) of each field of docs/calls.md's JSON record that this version records."""
    text = (ROOT / "docs" / "calls.md").read_text(encoding="utf-8")
    section = text.split("\n## The JSON record", 1)[1].split("\n## ", 1)[0]
    fields = []
    for line in section.splitlines():
        if line.startswith("| `") and "not yet recorded" not in line:
            key, kind = (cell.strip() for cell in line.strip("|").split("|")[:2])
            fields.append((key.strip("`"), kind))
    return fields


def test_json_keys_row_columns_and_schema_columns_derive_from_one_field_list(tmp_path: Path,
                                                                            ) -> None:
    documented = _documented_fields()
    names = [f.name for f in FIELDS]
    assert [(f.name, f.json_type) for f in FIELDS] == documented
    assert names == [  # what the replay tests expect of `calls --format json`
        "call_id", "linkedid", "caller_number", "caller_name", "dialed_number", "offered_at",
        "bot_answered_at", "bot_ended_at", "transferred_at", "human_answered_at", "ended_at",
        "ring_seconds", "bot_seconds", "human_seconds", "total_seconds", "outcome",
        "transfer_target", "transfer_answered", "hangup_cause", "modules", "plan_id", "cost",
        "currency", "csat", "bot_session_id", "source", "joined_late",
    ]
    assert CallRecord._fields == tuple(f.name for f in FIELDS if f.origin is Origin.RECORD)

    call = record(asr=("1.5", "seconds"))
    assert list(call.to_json()) == names
    row = call_row(call, (None,) * 5, "2026-11-26T00:00:00.000Z")
    assert list(row) == list(CALL_COLUMNS)
    assert list(CALL_COLUMNS)[: len(names)] == names

    store = CallStore(tmp_path / "f.db")
    info = store.db.conn.execute("PRAGMA table_info(calls)").fetchall()
    assert [c[1] for c in info] == list(CALL_COLUMNS)
    assert {c[1] for c in info if c[3]} == set(NOT_NULL)
    store.save([call])
    [stored] = store.db.query("SELECT * FROM calls")
    assert {k: v for k, v in stored.items() if k not in ("rated_at", "recorded_at")} == {
        k: v for k, v in row.items() if k not in ("rated_at", "recorded_at")}
    assert store.calls() == [call]

    out = io.StringIO()
    from botmeter.reports.calls import render_calls

    render_calls([], "csv", out)
    assert out.getvalue().strip().split(",") == names


# -- exact module quantities ---------------------------------------------------------------------

BIG = "98765432109.876543"


def test_module_quantities_are_printed_exactly_in_json_csv_and_table(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    store = CallStore(db)
    store.save([record("q1", asr=(BIG, "seconds"), tts=("412.000", "characters"),
                       nlu=("0.10", "requests"))])
    store.close()

    def listed(fmt: str) -> str:
        result = CliRunner().invoke(main, ["calls", "--db", str(db), "--format", fmt])
        assert result.exit_code == 0, result.output
        return result.output

    as_json = listed("json")
    assert f'"quantity": {BIG},' in as_json
    [call] = json.loads(as_json, parse_float=Decimal)
    assert call["modules"] == {"asr": {"quantity": Decimal(BIG), "unit": "seconds"},
                               "nlu": {"quantity": Decimal("0.1"), "unit": "requests"},
                               "tts": {"quantity": 412, "unit": "characters"}}
    [row] = csv.DictReader(io.StringIO(listed("csv")))
    assert json.loads(row["modules"], parse_float=Decimal)["asr"]["quantity"] == Decimal(BIG)
    assert f'"quantity": {BIG}' in row["modules"]
    assert f"asr {BIG} s, nlu 0.1 req, tts 412 chars" in listed("table")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(json_values)
def test_json_text_writes_what_json_dumps_writes(value: Any) -> None:
    assert json_text(value) == json.dumps(value, ensure_ascii=False)
    assert json_text(value, indent=1) == json.dumps(value, ensure_ascii=False, indent=1)


def test_json_text_writes_decimals_digit_for_digit() -> None:
    assert json_text({"q": Decimal(BIG), "n": [Decimal("1E+3"), Decimal("0.0000001")]}) == \
        f'{{"q": {BIG}, "n": [1000, 0.0000001]}}'


# -- migrations ----------------------------------------------------------------------------------

#: Version 3 exactly as botmeter wrote it before version 4 (the three migrations it shipped,
#: which schema.py keeps frozen to upgrade old files)
OLD_SCHEMA = dict(enumerate(LEGACY_MIGRATIONS, start=1))


def old_database(path: Path, version: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for number in range(1, version + 1):
        conn.executescript(f"BEGIN; {OLD_SCHEMA[number]}; PRAGMA user_version = {number}; COMMIT;")
    return conn


def old_save(conn: sqlite3.Connection, r: CallRecord, rating: tuple[Any, ...] = (None,) * 5, *,
             json_modules: bool = True) -> None:
    """What botmeter before version 4 wrote for a call: its row (module usage as JSON from
    version 2 on) and its call_modules rows."""
    row: dict[str, Any] = {
        "call_id": r.call_id, "linkedid": r.linkedid, "caller_number": r.caller_number,
        "caller_name": r.caller_name, "dialed_number": r.dialed_number,
        **{f: iso_utc(getattr(r, f)) for f in ("offered_at", "bot_answered_at", "bot_ended_at",
                                               "transferred_at", "human_answered_at", "ended_at")},
        "ring_seconds": r.ring_seconds, "bot_seconds": r.bot_seconds,
        "human_seconds": r.human_seconds, "total_seconds": r.total_seconds,
        "outcome": r.outcome, "transfer_target": r.transfer_target,
        "transfer_answered": None if r.transfer_answered is None else int(r.transfer_answered),
        "hangup_cause": r.hangup_cause, "source": r.source,
        **dict(zip(("plan_id", "cost", "currency"), rating[:3], strict=True)),
        "recorded_at": "2026-11-26T00:00:00.000Z",
    }
    if json_modules:
        row["charges"], row["rated_at"] = rating[3:]
        row["modules"] = json.dumps(
            {m: [format(u.quantity, "f"), u.unit] for m, u in r.modules.items()},
            ensure_ascii=False) if r.modules else None
    conn.execute(f"INSERT INTO calls ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                 list(row.values()))
    conn.executemany("INSERT INTO call_modules VALUES (?, ?, ?, ?)",
                     [(r.call_id, m, format(u.quantity, "f"), u.unit)
                      for m, u in r.modules.items()])


def layout(conn: sqlite3.Connection) -> dict[str, object]:
    """Tables (columns: name, type, not null, primary key), indexes and views, for comparing."""
    found: dict[str, object] = {}
    for kind, name, table in conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"):
        if kind == "index":
            columns = [c[2] for c in conn.execute(f"PRAGMA index_info({name})")]
            found[f"index {name}"] = (table, columns)
        else:
            found[f"{kind} {name}"] = sorted((c[1], c[2].upper(), c[3], c[5])
                                             for c in conn.execute(f"PRAGMA table_info({name})"))
    return found


RATED = ("per-minute", "0.1200", "CNY", '[["Bot minutes", "1", "0.1200"]]',
         "2026-11-26T00:00:01.000Z")


def test_a_version_3_database_migrates_keeping_every_call_and_its_module_usage(
        tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = old_database(path, 3)
    calls = [record(f"m{i}", 1_795_000_000.0 + i)._replace(modules={
        "asr": ModuleUsage(Decimal(f"{i}.25"), "seconds"),
        "nlu": ModuleUsage(Decimal(i), "requests"),
        "q.a": ModuleUsage(Decimal("0.000001"), "answers")}) for i in range(50)]
    calls += [record("none"), record("big", asr=(BIG, "seconds"))]
    with_rating = {"m1", "big"}
    conn.execute("BEGIN")
    for call in calls:
        old_save(conn, call, RATED if call.call_id in with_rating else (None,) * 5)
    # usage only in the table (JSON lost by hand) and JSON that disagrees with the table
    edited = record("edited", asr=("7", "seconds"), tts=("12", "characters"))
    old_save(conn, edited)
    conn.execute("UPDATE calls SET modules = NULL WHERE call_id = 'm3'")
    conn.execute("""UPDATE calls SET modules = '{"asr": ["1", "seconds"]}'
                    WHERE call_id = 'edited'""")
    conn.execute("INSERT INTO rejected (call_id, record, reason, rejected_at) VALUES "
                 "('bad', '{\"call_id\": \"bad\"}', 'OverflowError: too big', 'x')")
    conn.execute("COMMIT")
    old_modules = set(conn.execute("SELECT call_id, module, quantity, unit FROM call_modules"))
    old_calls = {row[0]: row for row in conn.execute(
        "SELECT call_id, offered_at, ended_at, outcome, plan_id, cost, currency, charges, "
        "rated_at, recorded_at, caller_name FROM calls")}
    conn.close()

    store = CallStore(path)
    assert store.schema_version == SCHEMA_VERSION == 11
    by_id = {c.call_id: c for c in store.calls()}
    assert by_id == {c.call_id: c for c in [*calls, edited]}  # every call, its usage exact
    assert by_id["big"].modules["asr"].quantity == Decimal(BIG)
    db = store.db.conn
    view = set(db.execute("SELECT call_id, module, quantity, unit FROM call_modules"))
    assert view == old_modules
    assert {row[0]: row for row in db.execute(
        "SELECT call_id, offered_at, ended_at, outcome, plan_id, cost, currency, charges, "
        "rated_at, recorded_at, caller_name FROM calls")} == old_calls
    assert list(db.execute("SELECT call_id, reason FROM rejected")) == [
        ("bad", "OverflowError: too big")]
    assert db.execute("SELECT type FROM sqlite_master WHERE name = 'call_modules'").fetchone() == (
        "view",)

    fresh = CallStore(tmp_path / "fresh.db")
    assert layout(db) == layout(fresh.db.conn)
    store.close()
    assert CallStore(path).calls() == store_calls_sorted([*calls, edited])  # reopening: no-op


def store_calls_sorted(calls: list[CallRecord]) -> list[CallRecord]:
    return sorted(calls, key=lambda c: (c.offered_at, c.call_id))


def test_a_version_1_database_migrates_through_every_step(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = old_database(path, 1)
    calls = [record("a", asr=("2.5", "seconds")), record("b", 1_795_000_100.0)]
    for call in calls:
        old_save(conn, call, json_modules=False)
    conn.close()
    store = CallStore(path)
    assert store.calls() == calls
    assert store.db.conn.execute("SELECT modules FROM calls WHERE call_id = 'b'").fetchone() == (
        None,)  # migration 2 wrote {} for no usage; version 4 stores none as NULL, as saves do
    assert layout(store.db.conn) == layout(CallStore(tmp_path / "fresh.db").db.conn)


def test_two_processes_opening_a_new_database_at_once_create_it_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        start.wait()
        try:
            CallStore(path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert CallStore(path).schema_version == SCHEMA_VERSION
