"""The simulated PBX's own records of its calls: CEL and CDR files written as Asterisk writes them.

`PbxRecords.event()` takes every event the PBX emits; `ChannelCache` turns them into channel
snapshot messages, `CelLog` and `CdrLog` into rows, and the writers put the rows where a
real Asterisk 20 would:

- CEL into SQLite table `cel` (`AcctId INTEGER PRIMARY KEY` then `CEL_COLUMNS`, untyped, every
  value text, as `cel_sqlite3_custom` creates and fills it);
- CDRs into SQLite table `cdr` (`CDR_COLUMNS`, as `cdr_sqlite3_custom`) and/or appended to a
  Master.csv (as `cdr_csv`).

The tables are as Asterisk's (default rollback journal, a 1-second busy timeout): a reader
may meet SQLITE_BUSY, and a row that still cannot be written is lost with a log line, never an
error for the PBX (`lost_rows` counts them). `commit="row"` makes each row one INSERT in its
own transaction, as Asterisk does; that costs a sync per row, which a disk serves some 800
times a second, about what 20 calls/s need. `commit="step"` (the default) commits whenever
the PBX has emitted everything due and waits for the next moment, and at least every
`STEP_SECONDS` while it catches up: rows appear as promptly, in far fewer transactions.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, TextIO

from botmeter.sim.cdr import CDR_COLUMNS, CdrLog, CdrRow
from botmeter.sim.cel import CEL_COLUMNS, CelLog
from botmeter.sim.channels import ChannelCache, Snapshot

log = logging.getLogger(__name__)

Commit = Literal["row", "step"]
COMMITS: tuple[Commit, ...] = ("row", "step")
#: cdrel_custom's default busy_timeout (milliseconds in cel/cdr_sqlite3_custom.conf)
BUSY_TIMEOUT = 1.0
#: commit="step": the longest a transaction stays open while the PBX catches up
STEP_SECONDS = 0.2


class RecordsUnavailable(Exception):
    """A records file cannot be opened or created."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class SqliteTable:
    """One table a custom SQLite backend writes: created if missing, one row per INSERT."""

    def __init__(self, path: Path, table: str, columns: Sequence[str], commit: Commit = "step",
                 busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        self.table = table
        self.commit = commit
        self.lost_rows = 0
        try:
            self._db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} "
                             f"(AcctId INTEGER PRIMARY KEY, {', '.join(columns)})")
        except sqlite3.Error as exc:
            raise RecordsUnavailable(path, str(exc)) from exc
        marks = ", ".join("?" * len(columns))
        self._insert = f"INSERT INTO {table} VALUES (NULL, {marks})"
        self._open_since: float | None = None  # monotonic time of the open transaction
        self._pending = 0  # rows in it

    def write(self, values: Sequence[str | int]) -> None:
        try:
            if self.commit == "step" and self._open_since is None:
                self._db.execute("BEGIN")
                self._open_since = time.monotonic()
            self._db.execute(self._insert, [str(v) for v in values])
            self._pending += 1
        except sqlite3.Error as exc:
            self.lost_rows += 1
            log.warning("sim %s: a %s row was not written (%s)", self.path, self.table, exc)

    def flush(self, *, idle: bool = True) -> None:
        """Commit the rows written since the last commit (commit="step"): when the PBX is
        `idle` (it waits for the next moment), or else once the transaction is old enough."""
        since = self._open_since
        if since is None or (not idle and time.monotonic() - since < STEP_SECONDS):
            return
        self._open_since = None
        pending, self._pending = self._pending, 0
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.lost_rows += pending
            log.warning("sim %s: %d %s rows were not written (%s)", self.path, pending,
                        self.table, exc)
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def close(self) -> None:
        self.flush()
        self._db.close()


def open_append(path: Path) -> TextIO:
    """A text file to append lines to (RecordsUnavailable if it cannot be)."""
    try:
        return path.open("a", encoding="utf-8", newline="")
    except OSError as exc:
        raise RecordsUnavailable(path, exc.strerror or str(exc)) from exc


class PbxRecords:
    """CEL and CDR of everything the PBX emits, into whichever files are given (None: not
    written). Feed `event` in emission order; `flush` when idle, `flush(idle=False)` after
    each time step; `close` at the end."""

    def __init__(self, *, cel_db: Path | None = None, cdr_db: Path | None = None,
                 cdr_csv: Path | None = None, commit: Commit = "step") -> None:
        if commit not in COMMITS:
            raise ValueError(f"commit must be one of {', '.join(COMMITS)}")
        self.channels = ChannelCache()
        self._cel = CelLog() if cel_db is not None else None
        self._cdr = CdrLog() if cdr_db is not None or cdr_csv is not None else None
        self._cel_table: SqliteTable | None = None
        self._cdr_table: SqliteTable | None = None
        self._csv: TextIO | None = None
        self.cel_rows = 0
        self.cdr_rows = 0
        try:
            if cel_db is not None:
                self._cel_table = SqliteTable(cel_db, "cel", CEL_COLUMNS, commit)
            if cdr_db is not None:
                self._cdr_table = SqliteTable(cdr_db, "cdr", CDR_COLUMNS, commit)
            if cdr_csv is not None:
                self._csv = open_append(cdr_csv)
        except RecordsUnavailable:
            self.close()
            raise

    @property
    def lost_rows(self) -> int:
        """Rows the databases refused (locked past the busy timeout, disk full...)."""
        return sum(t.lost_rows for t in (self._cel_table, self._cdr_table) if t is not None)

    def live(self) -> list[Snapshot]:
        """The channels up now, oldest first."""
        return self.channels.live()

    def event(self, stamp: float, name: str, headers: Mapping[str, str]) -> None:
        for message in self.channels.feed(stamp, name, headers):
            if self._cel is not None and self._cel_table is not None:
                for row in self._cel.handle(message):
                    self._cel_table.write(row.values())
                    self.cel_rows += 1
            if self._cdr is not None:
                self._write_cdrs(self._cdr.handle(message))

    def _write_cdrs(self, rows: list[CdrRow]) -> None:
        for row in rows:
            if self._cdr_table is not None:
                self._cdr_table.write(row.values())
            if self._csv is not None:
                self._csv.write(row.master_csv())
            self.cdr_rows += 1
        if rows and self._csv is not None:
            self._csv.flush()

    def flush(self, *, idle: bool = True) -> None:
        """Commit what is written (see `SqliteTable.flush`)."""
        for table in (self._cel_table, self._cdr_table):
            if table is not None:
                table.flush(idle=idle)

    def close(self) -> None:
        for table in (self._cel_table, self._cdr_table):
            if table is not None:
                table.close()
        if self._csv is not None:
            self._csv.close()
