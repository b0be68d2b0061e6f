"""`botmeter db backup|stats|vacuum|purge` as a user runs them (subprocesses), on real SQLite
files: a backup taken while calls are written, stats checked against a hand-built database,
a purge that keeps months the vendor has not been sent, and bad arguments in one line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from botmeter.rating.periods import period_bounds, period_of, shift_period
from botmeter.storage.schema import LEGACY_MIGRATIONS, SCHEMA_VERSION
from botmeter.storage.store import CallStore

from .rating_support import PLANS_DIR, local_ms, make_call
from .test_cli_failures import one_line

SHANGHAI = ZoneInfo("Asia/Shanghai")
PLANS = '\n[plans]\ndir = "plans"\nactive = "per-minute"\n'


def botmeter(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "botmeter.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def config(tmp_path: Path, write_config) -> Path:
    """A config whose active plan counts months in Asia/Shanghai; [store] path calls.db."""
    (tmp_path / "plans").mkdir()
    shutil.copy(PLANS_DIR / "per-minute.toml", tmp_path / "plans")
    return write_config(extra=PLANS)


def call_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT call_id FROM calls")]
    finally:
        conn.close()


# -- backup ------------------------------------------------------------------------------

class Writer(threading.Thread):
    """Stores calls w0, w1, ... one transaction each, as the agent's writer does, until
    stopped; `committed` counts those whose transaction has returned."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db, self.committed, self.halt = db, 0, threading.Event()

    def run(self) -> None:
        store = CallStore(self.db)
        try:
            while not self.halt.is_set():
                store.save([make_call(f"w{self.committed}", end_ms=local_ms(2026, 11, 10)
                                      + self.committed)])
                self.committed += 1
        finally:
            store.close()


def test_a_backup_taken_while_calls_are_written_holds_every_call_committed_before_it(
        tmp_path: Path, config: Path) -> None:
    db, copy = tmp_path / "calls.db", tmp_path / "backups" / "calls-copy.db"
    copy.parent.mkdir()
    store = CallStore(db)
    store.save([make_call(f"seed{i}", modules={"asr": "12.5"}) for i in range(20_000)])
    store.close()
    writer = Writer(db)
    writer.start()
    try:
        while writer.committed < 50:  # the writer is under way
            time.sleep(0.01)
        before = writer.committed
        done = botmeter(config, "db", "backup", str(copy))
        after = writer.committed
    finally:
        writer.halt.set()
        writer.join()
    assert done.returncode == 0, done.stderr
    assert f"to {copy}" in done.stdout and "integrity check ok" in done.stdout
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert not [p for p in copy.parent.iterdir() if p != copy]  # no temporary file left
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one file
        ids = [row[0] for row in conn.execute("SELECT call_id FROM calls")]
    finally:
        conn.close()
    written = {int(i[1:]) for i in ids if i.startswith("w")}
    assert sum(1 for i in ids if i.startswith("seed")) == 20_000
    # a consistent snapshot: the calls committed up to one moment, none missing before it
    assert written == set(range(len(written)))
    assert before <= len(written) <= after
    assert f"backed up {20_000 + len(written):,} calls" in done.stdout
    assert writer.committed > len(written)  # the writer went on meanwhile


def test_backup_never_replaces_a_file_without_force(tmp_path: Path, config: Path) -> None:
    CallStore(tmp_path / "calls.db").save([make_call("c1")])
    target = tmp_path / "copy.db"
    target.write_text("precious")
    done = botmeter(config, "db", "backup", str(target))
    one_line(2, done.returncode, done.stdout, done.stderr, "backup error", str(target),
             "already exists", "--force")
    assert target.read_text() == "precious"
    done = botmeter(config, "db", "backup", str(target), "--force")
    assert done.returncode == 0, done.stderr
    assert call_ids(target) == ["c1"]


@pytest.mark.parametrize("where", ["folder", "missing folder", "under a file", "the database",
                                   "its wal"])
def test_backup_to_a_bad_place_is_one_line_and_exit_2(tmp_path: Path, config: Path,
                                                      where: str) -> None:
    CallStore(tmp_path / "calls.db").save([make_call("c1")])
    (tmp_path / "notes.txt").write_text("x")
    target = {"folder": tmp_path, "missing folder": tmp_path / "nowhere" / "copy.db",
              "under a file": tmp_path / "notes.txt" / "copy.db",
              "the database": tmp_path / "calls.db",
              "its wal": tmp_path / "calls.db-wal"}[where]
    before = _digest(tmp_path / "calls.db")
    done = botmeter(config, "db", "backup", str(target), "--force")
    one_line(2, done.returncode, done.stdout, done.stderr, "backup error", str(target))
    assert _digest(tmp_path / "calls.db") == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_backup_into_a_folder_it_cannot_write_is_exit_2(tmp_path: Path, config: Path) -> None:
    CallStore(tmp_path / "calls.db").save([make_call("c1")])
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = botmeter(config, "db", "backup", str(locked / "copy.db"))
    one_line(2, done.returncode, done.stdout, done.stderr, "backup error", "permission denied")


@pytest.mark.parametrize("command", [["backup", "{copy}"], ["stats"], ["stats", "--json"],
                                     ["purge", "--dry-run"], ["vacuum"]])
@pytest.mark.parametrize("source", ["other program's", "not sqlite", "missing"])
def test_db_commands_refuse_what_is_not_a_botmeter_database(
        tmp_path: Path, config: Path, command: list[str], source: str) -> None:
    other = tmp_path / "other.db"
    if source == "other program's":
        conn = sqlite3.connect(other)
        conn.execute("CREATE TABLE contacts (name TEXT)")
        conn.commit()
        conn.close()
    elif source == "not sqlite":
        other.write_text("a text file, long enough to be taken for a database " * 20)
    config.write_text(config.read_text().replace("[store]\n", "[store]\nkeep_months = 2\n"))
    before = _digest(other) if other.exists() else None
    args = [a.format(copy=tmp_path / "copy.db") for a in command]
    done = botmeter(config, "db", *args, "--db", str(other))
    line = one_line(2, done.returncode, done.stdout, done.stderr, str(other))
    assert ("no database here" if source == "missing" else "not a botmeter database") in line
    assert (_digest(other) if other.exists() else None) == before  # never created or changed
    assert not (tmp_path / "copy.db").exists()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- stats -------------------------------------------------------------------------------

def outbox_row(conn: sqlite3.Connection, bucket: str, end: str, state: str,
                revision: int = 1) -> None:
    conn.execute(
        "INSERT INTO uplink_outbox (agent_id, plan_id, bucket_start, bucket_end, revision, "
        "summary, digest, key, state, created_at, attempts) VALUES ('a', 'per-minute', ?, ?, "
        "?, '{}', 'd', ?, ?, '2026-11-01T00:00:00.000Z', 0)",
        (bucket, end, revision, f"k-{bucket}-{revision}", state))


def test_stats_match_a_hand_built_database_and_change_nothing(tmp_path: Path,
                                                             config: Path) -> None:
    db = tmp_path / "calls.db"
    store = CallStore(db)
    store.save([
        make_call("sep", end_ms=local_ms(2026, 9, 15, 12)),
        # 2026-10-31 16:30 UTC is 2026-11-01 00:30 in Shanghai: November, the plan's month
        make_call("nov-first", end_ms=local_ms(2026, 11, 1, 0, 30)),
        make_call("nov-mid", end_ms=local_ms(2026, 11, 15, 9), offered_ms=local_ms(2026, 11, 15, 8)),
        make_call("nov-last", end_ms=local_ms(2026, 11, 30, 23, 59)),
        make_call("jan", end_ms=local_ms(2027, 1, 2, 10)),  # December holds none: not listed
    ])
    store.reject("bad1", "{}", "test")
    store.reject(None, "{}", "test")
    conn = store.db.conn
    for n, state in enumerate(["pending", "pending", "delivered", "delivered", "delivered",
                               "parked"]):
        outbox_row(conn, f"2026-11-20T{n:02d}:00:00Z", f"2026-11-20T{n:02d}:59:59Z", state)
    oldest = make_call("sep", end_ms=local_ms(2026, 9, 15, 12)).offered_at
    store.close()
    before = (_digest(db), db.stat().st_mtime_ns)
    done = botmeter(config, "db", "stats", "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert (_digest(db), db.stat().st_mtime_ns) == before  # read only
    assert stats["calls"] == 5 and stats["rejected"] == 2 and stats["schema_version"] == SCHEMA_VERSION == 11
    assert stats["timezone"] == "Asia/Shanghai"
    assert stats["months"] == [{"period": "2026-09", "calls": 1},
                               {"period": "2026-11", "calls": 3},
                               {"period": "2027-01", "calls": 1}]
    assert stats["uplink_outbox"] == {"pending": 2, "delivered": 3, "parked": 1,
                                      "superseded": 0}
    from botmeter.tracking.record import iso_utc

    assert stats["oldest_call"] == iso_utc(oldest)
    assert stats["newest_call"] == iso_utc(make_call("jan", end_ms=local_ms(2027, 1, 2, 10))
                                           .offered_at)
    size = stats["size"]
    assert size["database_bytes"] == db.stat().st_size == size["pages"] * size["page_size"]
    assert stats["spill_file"] is None
    text = botmeter(config, "db", "stats")
    assert text.returncode == 0, text.stderr
    assert "calls:         5" in text.stdout and "2026-11             3" in text.stdout


def test_stats_never_migrate_an_older_database(tmp_path: Path, config: Path) -> None:
    db = tmp_path / "calls.db"
    conn = sqlite3.connect(db)
    conn.executescript("".join(LEGACY_MIGRATIONS) + "PRAGMA user_version = 3;")
    conn.execute("INSERT INTO calls (call_id, linkedid, offered_at, ended_at, outcome, source, "
                 "recorded_at) VALUES ('old', 'old', '2026-10-01T01:00:00.000Z', "
                 "'2026-10-01T01:05:00.000Z', 'handled', 'ami', '2026-10-01T01:05:00.000Z')")
    conn.commit()
    conn.close()
    done = botmeter(config, "db", "stats", "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["schema_version"] == 3 and stats["calls"] == 1
    assert stats["uplink_outbox"] == {"pending": 0, "delivered": 0, "parked": 0, "superseded": 0}
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (3,)
    finally:
        conn.close()


# -- purge and vacuum --------------------------------------------------------------------

def month_calls(period: str, count: int, prefix: str) -> list:
    """`count` calls ending mid-month (Shanghai) in `period`."""
    start, end = period_bounds(period, SHANGHAI)
    middle = (start + end) / 2
    return [make_call(f"{prefix}-{n}", end_ms=round((middle + 60 * n) * 1000),
                      modules={"asr": "1.5"}) for n in range(count)]


def test_purge_deletes_old_months_but_keeps_those_with_undelivered_summaries(
        tmp_path: Path, config: Path) -> None:
    now = period_of(time.time(), SHANGHAI)
    months = {k: shift_period(now, -k) for k in range(6)}  # 0: this month ... 5: five ago
    db = tmp_path / "calls.db"
    store = CallStore(db)
    for k, period in months.items():
        store.save(month_calls(period, 200 + k, f"m{k}"))
    start, end = period_bounds(months[4], SHANGHAI)
    from botmeter.uplink.buckets import iso_z

    outbox_row(store.db.conn, iso_z(start + 3600), iso_z(start + 7200), "pending")
    outbox_row(store.db.conn, iso_z(start + 3600), iso_z(start + 7200), "delivered", 2)
    start3, _ = period_bounds(months[3], SHANGHAI)
    outbox_row(store.db.conn, iso_z(start3), iso_z(start3 + 3600), "delivered")
    store.close()
    config.write_text(config.read_text().replace("[store]\n", "[store]\nkeep_months = 2\n"))

    dry = botmeter(config, "db", "purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"keeping {months[2]} onwards" in dry.stdout
    assert f"{months[5]}           205 calls  would be purged" in dry.stdout
    assert f"{months[4]}           204 calls  kept: an uplink summary" in dry.stdout
    assert "dry run: 408 calls would be purged" in dry.stdout
    assert len(call_ids(db)) == sum(200 + k for k in range(6))

    done = botmeter(config, "db", "purge")
    assert done.returncode == 0, done.stderr
    assert "purged 408 calls" in done.stdout
    left = call_ids(db)
    assert {i.split("-")[0] for i in left} == {"m0", "m1", "m2", "m4"}
    assert len(left) == 200 + 201 + 202 + 204

    size = db.stat().st_size
    vacuumed = botmeter(config, "db", "vacuum")
    assert vacuumed.returncode == 0, vacuumed.stderr
    assert db.stat().st_size < size
    assert sorted(call_ids(db)) == sorted(left)


def test_purge_without_keep_months_is_one_line_and_exit_2(tmp_path: Path, config: Path) -> None:
    CallStore(tmp_path / "calls.db").save([make_call("c1")])
    done = botmeter(config, "db", "purge")
    one_line(2, done.returncode, done.stdout, done.stderr, "keep_months", str(config))
    assert call_ids(tmp_path / "calls.db") == ["c1"]


@pytest.mark.parametrize("value", ["0", "-1", '"3"', "1.5"])
def test_keep_months_below_one_is_refused(config: Path, value: str) -> None:
    config.write_text(config.read_text().replace("[store]\n", f"[store]\nkeep_months = {value}\n"))
    done = botmeter(config, "db", "purge", "--dry-run")
    one_line(2, done.returncode, done.stdout, done.stderr, "configuration error",
             "store.keep_months")
