"""One reading of everything health and metrics report: taken from the agent's live objects on
the event loop (counters) and from the database on a thread (sizes, the uplink's outbox)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..bot.fastagi import FastAgiServer
    from ..pbx.ami_client import AmiClient
    from ..recorder import Recorder
    from ..storage.writer import RecordWriter

#: seconds a read of the database for a scrape may wait for a lock
READ_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class DiskReading:
    """What the database file says (read on a thread)."""

    size_bytes: int | None = None  # the file and its WAL; None: no file
    writable: str | None = None  # None: writable; else why not
    uplink_backlog: int | None = None  # outbox revisions not delivered (pending and parked)
    uplink_parked: int | None = None
    uplink_last_success: float | None = None  # unix time
    problem: str | None = None  # the database could not be read


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The agent at one moment."""

    ami_target: str
    ami_connected: bool
    ami_events: dict[str, int]
    ami_sessions: int
    ami_reconnects: int
    ami_failures: int
    ami_bad_values: int
    ami_discarded_frames: int
    seconds_since_ami_event: float | None
    calls_in_progress: int
    calls_stored: dict[str, int]
    calls_rejected: int
    calls_spilled: int
    calls_lost: int
    writer_alive: bool
    writer_queue: int
    writer_busy_seconds: float | None  # how long the batch being stored has taken so far
    writer_failing: str | None
    fastagi: dict[str, int] | None
    uplink_enabled: bool
    disk: DiskReading = field(default_factory=DiskReading)
    writer_failing_seconds: float | None = None  # since storing began to fail
    database_trouble: str | None = None  # its kind (storage.trouble.KINDS)
    ami_reading_paused: bool = False  # back-pressure: the writer's backlog reached its bound


@dataclass(frozen=True)
class AgentProbe:
    """Reads a Snapshot from the agent's parts (the counters they keep anyway)."""

    client: AmiClient
    recorder: Recorder
    writer: RecordWriter
    fastagi: FastAgiServer | None
    store_path: Path
    #: whether the agent has an uplink now (a reload may add or remove it)
    uplink_on: Callable[[], bool] = lambda: False

    def counters(self, disk: DiskReading | None = None) -> Snapshot:
        """The in-memory part (call on the event loop), with `disk` as read by `read_disk`."""
        client, writer = self.client, self.writer
        busy = writer.busy_since
        trouble = writer.trouble.current
        now = time.monotonic()
        settings = client.settings
        return Snapshot(
            ami_target=f"{settings.host}:{settings.port}",
            ami_connected=client.connected.is_set(),
            ami_events=dict(client.traffic.events),
            ami_sessions=client.sessions,
            ami_reconnects=client.reconnects,
            ami_failures=client.failures,
            ami_bad_values=client.bad_values.total,
            ami_discarded_frames=client.discarded_frames(),
            seconds_since_ami_event=client.traffic.seconds_since_event(),
            calls_in_progress=self.recorder.tracker.active_calls,
            calls_stored=writer.stored_by_outcome(),
            calls_rejected=writer.rejected,
            calls_spilled=writer.spilled,
            calls_lost=writer.lost,
            writer_alive=writer.alive,
            writer_queue=writer.queued(),
            writer_busy_seconds=None if busy is None else now - busy,
            writer_failing=writer.failing,
            writer_failing_seconds=None if trouble is None else trouble.seconds(now),
            database_trouble=None if trouble is None else trouble.kind,
            ami_reading_paused=client.reading_paused,
            fastagi=self.fastagi.counters() if self.fastagi is not None else None,
            uplink_enabled=self.uplink_on(),
            disk=disk or DiskReading(),
        )

    def read_disk(self) -> DiskReading:
        """The database's size, whether this process may write it, and the uplink's outbox
        (blocking: run it on a thread)."""
        return read_disk(self.store_path, uplink=self.uplink_on())


def read_disk(path: Path, *, uplink: bool) -> DiskReading:
    size = _size(path)
    writable = _writable(path)
    if size is None or not uplink:
        return DiskReading(size, writable)
    try:
        outbox = _outbox(path)
    except sqlite3.Error as exc:
        return DiskReading(size, writable, problem=f"cannot read {path}: {exc}")
    return DiskReading(size, writable, **outbox)


def _size(path: Path) -> int | None:
    try:
        size = path.stat().st_size
    except OSError:
        return None
    with contextlib.suppress(OSError):  # no WAL file: nothing to add
        size += Path(f"{path}-wal").stat().st_size
    return size


def _writable(path: Path) -> str | None:
    """None when this process may write the database and create its journal files."""
    if not os.access(path, os.W_OK):
        return f"{path} is not writable by this user" if path.exists() else f"{path} is missing"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"{path.parent} is not writable by this user (SQLite keeps its WAL there)"
    return None


def _outbox(path: Path) -> dict[str, Any]:
    from ..uplink.status import sync_status

    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                           timeout=READ_TIMEOUT, isolation_level=None)
    try:
        status = sync_status(conn, time.time())
    finally:
        conn.close()
    success = status["last_success"]
    at = success.get("at") if isinstance(success, dict) else None
    return {"uplink_backlog": status["pending"] + len(status["parked"]),
            "uplink_parked": len(status["parked"]),
            "uplink_last_success": _epoch(at)}


def _epoch(iso: object) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
