"""Keeps the recovery checkpoint in the database as the agent runs, and at its stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import structlog

from ..storage.reopen import at_path
from ..storage.store import BUSY_TIMEOUT, CallStore
from ..tracking.tracker import CallTracker
from .checkpoint import Unstored, low_water, write_checkpoint
from .gate import EventGate

log = structlog.get_logger(__name__)

#: seconds between two checkpoint writes (when it moved)
INTERVAL_SECONDS = 2.0


class CheckpointKeeper:
    """Writes `low_water(...)` to `recovery_state` when it moved, from the event loop (the
    tracker's thread) through a worker thread with a connection of its own. Not while the
    gate holds events (the tracker is being rebuilt then), nor while `pinned()` (the last
    heal failed: the gap since the stored checkpoint is still to be healed)."""

    def __init__(self, tracker: CallTracker, unstored: Unstored, gate: EventGate,
                 store_factory: Callable[[], CallStore], *,
                 pinned: Callable[[], bool] = lambda: False) -> None:
        self._tracker = tracker
        self._unstored = unstored
        self._gate = gate
        self._pinned = pinned
        self._factory = store_factory
        self._store: CallStore | None = None
        self._lock = threading.Lock()  # one write at a time (the loop's and the stop's)
        self.written: float | None = None
        self.failures = 0

    def value(self) -> float | None:
        """The checkpoint now (on the event loop), or None while the gate holds events or
        the checkpoint is pinned."""
        if self._gate.holding or self._pinned():
            return None
        return low_water(self._tracker, self._unstored)

    async def run(self, interval: float = INTERVAL_SECONDS) -> None:
        while True:
            await asyncio.sleep(interval)
            value = self.value()
            if value is not None and value != self.written:
                await asyncio.to_thread(self.write, value)

    def write(self, value: float, timeout: float = BUSY_TIMEOUT, *, last: bool = False) -> bool:
        """Store `value` (in a worker thread), waiting at most about `timeout` seconds for the
        database; False if it refused (logged once per run of failures; the next write tries
        again). An older checkpoint left in place only makes the next healing read more.
        `last` (at the stop): only through a connection already open, as opening a database
        in trouble can take longer than a stop may."""
        if not self._lock.acquire(timeout=max(0.0, timeout)):
            return False
        try:
            if last and self._store is None:
                return False
            self._store = at_path(self._store, self._factory)  # a new file after a delete
            self._store.set_busy_timeout(timeout)
            write_checkpoint(self._store.db.conn, value)
        except Exception as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning("recovery checkpoint not stored; trying again", error=str(exc))
            return False
        finally:
            self._lock.release()
        if self.failures:
            log.info("recovery checkpoint stored again", after_failures=self.failures)
            self.failures = 0
        self.written = value
        return True

    def close(self, timeout: float = BUSY_TIMEOUT) -> None:
        if not self._lock.acquire(timeout=max(0.0, timeout)):
            return  # a write still waits for the database: its thread ends with the process
        try:
            if self._store is not None:
                self._store.close()
                self._store = None
        finally:
            self._lock.release()
