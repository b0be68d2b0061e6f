"""`botmeter db backup`: an online, consistent copy of the database, taken while the agent
writes.

The copy is made with SQLite's backup API from a read-only connection that holds one read
transaction from start to end: the copy is the database as of the moment it started (every
call committed before is in it, none committed after), and the agent's writes go on
meanwhile (WAL: a reader never blocks the writer; the WAL only stops being checkpointed past
that moment until the copy ends). Pages are copied `PAGES_PER_STEP` at a time.

The copy is written to a temporary file next to the target (mode 0600: it holds callers'
numbers), switched from WAL to a rollback journal (one self-contained file), checked with
`PRAGMA integrity_check`, synced, and only then put in place; an existing target is never
replaced without `force`. Calls waiting in the spill file are not in the database yet, so
not in the copy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .readonly import open_readonly
from .spill import spill_path, sync_dir
from .store import PRIVATE_MODE, StoreError, database_problem

#: pages copied per step of the backup API (4 MiB with SQLite's default 4 KiB pages)
PAGES_PER_STEP = 1024

Progress = Callable[[int, int], None]  # (pages copied, pages in all)


class BadTarget(Exception):
    """The backup cannot go where it was asked to: names the path and why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class BackupFailed(StoreError):
    """Copying or checking the copy failed; no file was left at the target."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    calls: int
    schema_version: int
    bytes: int


def check_target(target: Path, source: Path, *, force: bool) -> None:
    """BadTarget unless a backup can be written at `target`."""
    if target.is_dir():
        raise BadTarget(target, "is a folder: give the backup's file name, e.g. "
                                f"{target / 'botmeter-backup.db'}")
    folder = target.parent
    if not folder.is_dir():
        raise BadTarget(target, f"its folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadTarget(target, f"cannot write in its folder {folder}: permission denied")
    if _is_the_database(target, source):
        raise BadTarget(target, "is the database itself (or one of its files): give another path")
    if target.exists() and not force:
        raise BadTarget(target, "already exists: give another path, or --force to replace it")


def _is_the_database(target: Path, source: Path) -> bool:
    files = [source, *(source.with_name(source.name + s) for s in ("-wal", "-shm"))]
    spill = spill_path(source)
    if spill is not None:
        files.append(spill)
    mine = target.absolute()
    for file in files:
        if mine == file.absolute():
            return True
        try:
            if target.exists() and os.path.samefile(target, file):
                return True
        except OSError:
            continue
    return False


def backup(source: Path, target: Path, *, force: bool = False, pages: int = PAGES_PER_STEP,
           progress: Progress | None = None) -> BackupResult:
    """Copy the database at `source` to `target` (see the module's docstring). BadTarget,
    the errors of `open_readonly`, or BackupFailed."""
    check_target(target, source, force=force)
    conn, version = open_readonly(source)
    try:
        temp = _temporary(target)
        try:
            calls = _copy(conn, source, temp, pages, progress)
            _place(temp, target, force=force)
        except BaseException:
            _remove(temp)
            raise
    finally:
        conn.close()
    return BackupResult(target, calls, version, target.stat().st_size)


def _copy(conn: sqlite3.Connection, source: Path, temp: Path, pages: int,
          progress: Progress | None) -> int:
    """The snapshot into `temp`, checked; returns how many calls it holds."""
    try:
        conn.execute("BEGIN")  # one snapshot for the count and every step of the copy
        try:
            calls = int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
            copy = sqlite3.connect(temp, isolation_level=None)
            try:
                conn.backup(copy, pages=pages, progress=None if progress is None else
                            lambda _status, left, total: progress(total - left, total))
                copy.execute("PRAGMA journal_mode = DELETE")
                problems = [row[0] for row in copy.execute("PRAGMA integrity_check")]
                copied = int(copy.execute("SELECT count(*) FROM calls").fetchone()[0])
            finally:
                copy.close()
        finally:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise BackupFailed(source, f"copy failed: {database_problem(exc)}") from None
    if problems != ["ok"]:
        raise BackupFailed(source, "the copy fails PRAGMA integrity_check: "
                                   + "; ".join(problems[:3]))
    if copied != calls:
        raise BackupFailed(source, f"the copy holds {copied} calls, the database {calls}")
    return calls


def _temporary(target: Path) -> Path:
    """A new empty file next to the target, 0600 whatever the umask."""
    for attempt in range(100):
        temp = target.with_name(f".{target.name}.partial-{os.getpid()}-{attempt}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_MODE)
        except FileExistsError:
            continue
        except OSError as exc:
            raise BadTarget(target, f"cannot write in its folder: {exc.strerror or exc}") from None
        try:
            os.fchmod(fd, PRIVATE_MODE)
        finally:
            os.close(fd)
        return temp
    raise BadTarget(target, "cannot create a temporary file next to it")


def _place(temp: Path, target: Path, *, force: bool) -> None:
    """Sync the finished copy and give it the target's name (atomically; never over an
    existing file without `force`)."""
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(temp, target)
        else:
            try:
                os.link(temp, target)  # fails if the target appeared meanwhile
            except FileExistsError:
                raise BadTarget(target, "already exists: give another path, or --force to "
                                        "replace it") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                _create_exclusive(target)  # a file system without hard links
                os.replace(temp, target)
            else:
                os.unlink(temp)
        sync_dir(target.parent)
    except OSError as exc:
        raise BackupFailed(target, f"cannot write the copy: {exc.strerror or exc}") from None


def _create_exclusive(target: Path) -> None:
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        raise BadTarget(target, "already exists: give another path, or --force to replace "
                                "it") from None


def _remove(temp: Path) -> None:
    for path in (temp, *(temp.with_name(temp.name + s) for s in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(OSError):
            path.unlink()
