"""The lab-cel fixture (18 real calls seen as AMI, CEL and CDR) for the recovery tests, and
Asterisk-like SQLite files built from its CSV exports at test time."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from botmeter.pbx.stream import decode_capture
from botmeter.tracking.record import CallRecord
from botmeter.tracking.rules import TrackingRules
from botmeter.tracking.tracker import CallTracker

from .conftest import FIXTURES

LAB_CEL_AMI = FIXTURES / "lab-cel.ami"
LAB_CEL_CSV = FIXTURES / "lab-cel.cel.csv"  # the `cel` table of master.db, `AcctId` = rowid
LAB_CDR_CSV = FIXTURES / "lab-cel.cdr.csv"  # the `cdr` table of the same file
LAB_MASTER_CSV = FIXTURES / "lab-cel.Master.csv"  # cdr_csv's Master.csv, no linkedid
LAB_CEL_EXPECTED = FIXTURES / "lab-cel.expected.json"
LAB_RULES = TrackingRules.build(inbound_contexts=["from-pstn"], bot_contexts=["voicebot"])


def lab_expected() -> list[dict]:
    return json.loads(LAB_CEL_EXPECTED.read_text(encoding="utf-8"))


def ami_records() -> dict[str, CallRecord]:
    """The AMI capture's records, by call_id."""
    tracker = CallTracker(LAB_RULES)
    records = [r for ev in decode_capture([LAB_CEL_AMI.read_bytes()]) for r in tracker.feed(ev)]
    return {r.call_id: r for r in records}


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as file:
        header, *rows = list(csv.reader(file))
    return header, rows


def write_table(db: Path, table: str, header: Sequence[str], rows: Iterable[Sequence[object]],
                ) -> Path:
    """A table as Asterisk's sqlite3_custom backends create it (`AcctId INTEGER PRIMARY KEY`,
    then the mapping's columns), filled with `rows` (their first value is the AcctId)."""
    columns = [c for c in header if c != "AcctId"]
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TABLE {table} (AcctId INTEGER PRIMARY KEY, "
                     f"{', '.join(f'{c} TEXT' for c in columns)})")
        conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * (len(columns) + 1))})",
                         rows)
    conn.close()
    return db


def lab_master_db(tmp_path: Path, name: str = "master.db") -> Path:
    """master.db as the lab's Asterisk wrote it: tables `cel` and `cdr`."""
    db = tmp_path / name
    for table, source in (("cel", LAB_CEL_CSV), ("cdr", LAB_CDR_CSV)):
        header, rows = read_csv(source)
        write_table(db, table, header, rows)
    return db
