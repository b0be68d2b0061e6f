"""Database trouble: what kind it is, and when to say so.

While the database refuses writes (locked by another process, disk full, an I/O error, not
writable, not there) the writer retries with backoff. `TroubleWatch` decides what to log
about one episode: one line when it starts, a reminder at most every `remind_every` seconds
while it lasts (at once if its kind changes), one line when it clears. Pure: the caller
passes the time and does the logging.
"""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass
from enum import Enum

#: seconds between reminders while the trouble lasts
REMIND_SECONDS = 60.0

#: the kinds of trouble, as the metric's label and the log's `trouble` field
KINDS = ("locked", "disk_full", "io_error", "not_writable", "cannot_open", "unusable", "error")

_BY_SQLITE_CODE = {"SQLITE_BUSY": "locked", "SQLITE_LOCKED": "locked", "SQLITE_FULL": "disk_full",
                   "SQLITE_IOERR": "io_error", "SQLITE_READONLY": "not_writable",
                   "SQLITE_CANTOPEN": "cannot_open", "SQLITE_PERM": "not_writable",
                   "SQLITE_CORRUPT": "unusable", "SQLITE_NOTADB": "unusable"}
_BY_ERRNO = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EFBIG: "disk_full",
             errno.EACCES: "not_writable", errno.EPERM: "not_writable",
             errno.EROFS: "not_writable", errno.EIO: "io_error", errno.ENOENT: "cannot_open"}
#: for errors that arrive as text only (a StoreError from opening the database)
_BY_TEXT = (("locked", "locked"), ("busy", "locked"), ("full", "disk_full"),
            ("no space", "disk_full"), ("quota", "disk_full"), ("file too large", "disk_full"),
            ("i/o error", "io_error"), ("readonly", "not_writable"),
            ("read-only", "not_writable"), ("permission denied", "not_writable"),
            ("unable to open", "cannot_open"), ("not a botmeter database", "unusable"),
            ("damaged", "unusable"), ("newer", "unusable"))


def classify(exc: BaseException) -> str:
    """The kind of trouble an error from storing or opening the database says (KINDS)."""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", None) or ""
        kind = _BY_SQLITE_CODE.get("_".join(name.split("_")[:2]))  # SQLITE_IOERR_WRITE: IOERR
        if kind is not None:
            return kind
    if isinstance(exc, OSError) and exc.errno in _BY_ERRNO:
        return _BY_ERRNO[exc.errno]
    text = str(exc).lower()
    return next((kind for word, kind in _BY_TEXT if word in text), "error")


def describe(exc: BaseException) -> str:
    """The error in one line, as SQLite or the OS said it."""
    return str(getattr(exc, "strerror", None) or exc) or type(exc).__name__


@dataclass(slots=True)
class Trouble:
    """One episode: since when storing fails (monotonic seconds) and why, as last seen."""

    kind: str
    error: str
    since: float
    said_at: float
    failures: int = 1

    def seconds(self, now: float) -> float:
        return max(0.0, now - self.since)


class Notice(Enum):
    STARTED = "started"  # the first failure
    CHANGED = "changed"  # failing still, for another reason
    REMINDER = "reminder"  # failing still, the last line a while ago


class TroubleWatch:
    """The current episode of database trouble (None: storing works)."""

    def __init__(self, remind_every: float = REMIND_SECONDS) -> None:
        self.remind_every = remind_every
        self.current: Trouble | None = None

    def failed(self, kind: str, error: str, began: float, now: float) -> Notice | None:
        """An attempt that began at `began` failed at `now`: what to say about it, if anything."""
        trouble = self.current
        if trouble is None:
            self.current = Trouble(kind, error, since=began, said_at=now)
            return Notice.STARTED
        trouble.failures += 1
        changed = kind != trouble.kind
        trouble.kind, trouble.error = kind, error
        if not changed and now - trouble.said_at < self.remind_every:
            return None
        trouble.said_at = now
        return Notice.CHANGED if changed else Notice.REMINDER

    def cleared(self) -> Trouble | None:
        """Storing works again: the episode that just ended, if there was one."""
        trouble, self.current = self.current, None
        return trouble
