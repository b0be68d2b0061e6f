"""A botmeter database opened read-only (`mode=ro`): for commands that only look at it
(`db stats`, the source of `db backup`), which must never create, migrate or write a file,
and may run beside the live agent (WAL: its writes go on)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .schema import SCHEMA_VERSION
from .store import BUSY_TIMEOUT, NoDatabase, StoreError, database_problem


class ForeignDatabase(StoreError):
    """The file is not a botmeter database (another program's, or not SQLite at all)."""


def open_readonly(path: Path) -> tuple[sqlite3.Connection, int]:
    """A read-only connection (autocommit; BEGIN for a snapshot) and the schema version.
    NoDatabase if there is no file, ForeignDatabase if it is not a botmeter database,
    StoreError for anything else that stops SQLite reading it."""
    if path.is_dir():
        raise NoDatabase(path, "is a folder, not a database file")
    if not path.exists():
        raise NoDatabase(path, "no database here (nothing recorded yet, or a mistyped path?)")
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True,
                               isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(path, database_problem(exc)) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        version = _botmeter_version(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn, version


def _botmeter_version(conn: sqlite3.Connection, path: Path) -> int:
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        has_calls = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                 "name = 'calls'").fetchone() is not None
    except sqlite3.DatabaseError as exc:
        if str(exc) == "file is not a database":
            raise ForeignDatabase(path, "not a botmeter database (not SQLite at all)") from None
        raise StoreError(path, database_problem(exc)) from None
    except sqlite3.Error as exc:
        raise StoreError(path, database_problem(exc)) from None
    if version == 0 or not has_calls:
        raise ForeignDatabase(path, "not a botmeter database (no botmeter layout in it): "
                                    "give the path of botmeter's database")
    if version > SCHEMA_VERSION:
        raise StoreError(path, f"database schema version {version} is newer than this "
                               f"botmeter ({SCHEMA_VERSION})")
    return version
