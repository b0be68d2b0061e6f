"""The recovery checkpoint: a time before which every call that began is stored.

After a crash, a restart or a detached AMI session, the agent rebuilds from Asterisk's own
records (CEL, else CDR) what it may have missed: the calls that began at or after the
checkpoint (less a margin). It is the earliest start among the calls in progress and the
finished calls the writer has not stored yet, else the last event handled; kept in table
`recovery_state` of the calls database, so a killed agent finds it at its next start.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable

from ..pbx.events import MAX_TIMESTAMP, MIN_TIMESTAMP
from ..tracking.record import CallRecord
from ..tracking.tracker import CallTracker

#: the checkpoint's name in table recovery_state
CHECKPOINT = "checkpoint"


class Unstored:
    """Finished calls handed to the writer and neither stored nor set aside yet, by call id
    (their start times); thread-safe: added on the event loop, removed by the writer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, float] = {}

    def add(self, record: CallRecord) -> None:
        with self._lock:
            offered = self._calls.get(record.call_id)
            self._calls[record.call_id] = (record.offered_at if offered is None
                                           else min(offered, record.offered_at))

    def done(self, records: Iterable[CallRecord]) -> None:
        with self._lock:
            for record in records:
                self._calls.pop(record.call_id, None)

    def oldest(self) -> float | None:
        with self._lock:
            return min(self._calls.values(), default=None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)


def low_water(tracker: CallTracker, unstored: Unstored) -> float | None:
    """The checkpoint now: the earliest start of a call in progress or not stored yet, else the
    last event handled (None before any event). Call on the tracker's thread."""
    starts = [t for t in (tracker.oldest_offered(), unstored.oldest()) if t is not None]
    if starts:
        return min(starts)
    return tracker.latest_ts or None


class CheckpointUnusable(ValueError):
    """The stored checkpoint is not a time botmeter writes (edited by hand, damaged): says
    what is stored."""


def read_checkpoint(conn: sqlite3.Connection) -> float | None:
    """The stored checkpoint (None: none yet). CheckpointUnusable if what is stored is not
    a time in 2000..2100."""
    row = conn.execute("SELECT value FROM recovery_state WHERE name = ?", (CHECKPOINT,)).fetchone()
    if row is None:
        return None
    stored = row[0]
    try:
        value = stored if isinstance(stored, int | float) else json.loads(stored)
    except (ValueError, TypeError):
        value = None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not MIN_TIMESTAMP <= value < MAX_TIMESTAMP):  # also NaN
        raise CheckpointUnusable(f"{str(stored)[:40]!r} is not a time in 2000..2100")
    return float(value)


def write_checkpoint(conn: sqlite3.Connection, value: float) -> None:
    """Store the checkpoint (its own short transaction)."""
    with conn:
        conn.execute("INSERT OR REPLACE INTO recovery_state (name, value) VALUES (?, ?)",
                     (CHECKPOINT, json.dumps(round(value, 6))))
