"""A background writer, so storing calls never stalls event handling.

While running, a batch the database cannot take (locked, disk full) is retried with backoff
and never dropped; a record the database refuses is set aside in `rejected` (see `guard`).
On `close(deadline)`, calls that cannot be stored by the deadline go to the spill file next
to the database, which the next start stores before anything else.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from ..tracking.record import CallRecord
from .guard import GuardedSaver, StoreUnavailable, describe_record
from .spill import UnreadableLine, append_spill, clear_spill, encode_record, read_spill
from .store import BUSY_TIMEOUT, CallStore

log = structlog.get_logger(__name__)

_STOP = object()

#: seconds kept before the deadline for writing the spill file (at most a quarter of the time)
SPILL_RESERVE = 1.0
#: how long `close()` gives the writer when no deadline is given
DEFAULT_CLOSE_SECONDS = 20.0


class RecordWriter:
    """Queue records from the event loop; a thread stores them at once, in batches under load.

    With a `spill` path, the thread first stores the calls a previous run spilled there.
    Counters: `saved`, `rejected` (set aside), `spilled` (to the spill file at close), `lost`
    (not even spilled: their records are in the log), `recovered` (from the spill file).
    """

    def __init__(self, store_factory: Callable[[], CallStore], *,
                 max_batch: int = 1000, on_error: Callable[[Exception, int], None] | None = None,
                 on_saved: Callable[[list[CallRecord]], None] | None = None,
                 spill: Path | None = None) -> None:
        self._factory = store_factory
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._on_error = on_error
        self._on_saved = on_saved
        self._spill = spill
        self._guard = GuardedSaver(on_saved=self._stored)
        self._thread = threading.Thread(target=self._run, name="botmeter-writer", daemon=True)
        self._ready = threading.Event()
        self._failure: Exception | None = None
        self._lock = threading.Lock()
        self._inflight: list[CallRecord] = []  # taken from the queue, not stored yet
        self._inflight_spilled = False  # ...and read from the spill file (already in it)
        self._give_up_at: float | None = None  # time.monotonic(); set by close()
        self._wake = threading.Event()
        self._closed = False
        self.saved = 0
        self.spilled = 0
        self.lost = 0
        self.recovered = 0

    @property
    def rejected(self) -> int:
        return self._guard.rejected

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    def submit(self, record: CallRecord) -> None:
        self._queue.put(record)

    def close(self, deadline: float | None = None) -> None:
        """Store everything queued, then stop. What cannot be stored by `deadline`
        (`time.monotonic()`; default in 20 s) is appended to the spill file instead."""
        if deadline is None:
            deadline = time.monotonic() + DEFAULT_CLOSE_SECONDS
        if self._thread.is_alive():
            reserve = min(SPILL_RESERVE, max(0.0, deadline - time.monotonic()) / 4)
            self._give_up_at = deadline - reserve
            self._queue.put(_STOP)
            self._wake.set()
            self._thread.join(max(0.0, self._give_up_at - time.monotonic()))
        with self._lock:
            self._closed = True
            leftovers = [] if self._inflight_spilled else list(self._inflight)
            self._inflight = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append(item)  # type: ignore[arg-type]
        if leftovers:
            self._spill_out(leftovers)
        if self._thread.is_alive():  # still in a write: it spills whatever it holds after that
            self._queue.put(_STOP)
            self._thread.join(max(0.0, deadline - time.monotonic()))

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            store = self._factory()
        except Exception as exc:  # surfaced by start()
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            if self._spill is not None:
                self._recover(store, self._spill)
            stopping = False
            while not stopping:
                batch, stopping = self._next_batch()
                if batch and not self._store(store, batch):
                    return  # out of time: close() spills what is left
        except Exception as exc:  # a bug: close() spills what is left
            log.error("writer stopped by an unexpected error; calls wait for the stop",
                      error=repr(exc))
        finally:
            store.close()

    def _next_batch(self) -> tuple[list[CallRecord], bool]:
        """Wait for a record, then take whatever else is already queued (batches form under load)."""
        item = self._queue.get()
        if item is _STOP:
            return [], True
        batch: list[CallRecord] = [item]  # type: ignore[list-item]
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)  # type: ignore[arg-type]
        return batch, False

    def _store(self, store: CallStore, batch: list[CallRecord], *,
               from_spill: bool = False) -> bool:
        """Save the batch, retrying with backoff while the database is unavailable; False if
        close() ran out of time first (the calls not stored stay in `_inflight`)."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._inflight, self._inflight_spilled = batch, from_spill
        if closed:  # taken from the queue just as close() gave up waiting
            if not from_spill:
                self._spill_out(batch)
            return False
        attempt = 0
        while True:
            give_up_at = self._give_up_at
            if give_up_at is not None:
                left = give_up_at - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                store.set_busy_timeout(min(BUSY_TIMEOUT, left))
            try:
                self._guard(store, batch)
            except StoreUnavailable as exc:
                batch = exc.remaining
                with self._lock:
                    if self._closed:
                        return False
                    self._inflight = batch
                attempt += 1
                if self._on_error is not None:
                    self._on_error(exc.cause, len(batch))
                delay = min(5.0, 0.1 * 2 ** attempt)
                if give_up_at is not None:
                    delay = min(delay, max(0.0, give_up_at - time.monotonic()))
                if self._wake.wait(delay):  # close() cuts a backoff short, once
                    self._wake.clear()
            else:
                with self._lock:
                    self._inflight = []
                return True

    def _stored(self, batch: list[CallRecord]) -> None:
        self.saved += len(batch)
        if self._on_saved is not None:
            self._on_saved(batch)

    def _recover(self, store: CallStore, path: Path) -> None:
        """Store the calls a previous run spilled, then remove the spill file."""
        try:
            self.recovered = load_spill(
                store, path, lambda records: self._store(store, records, from_spill=True))
        except OSError as exc:
            log.error("spill file unusable; its calls stay in it", spill_file=str(path),
                      error=str(exc))

    # -- closing -------------------------------------------------------------------------

    def _spill_out(self, records: list[CallRecord]) -> None:
        """Records not stored in time: to the spill file, else (no file, disk dead) to the log."""
        if self._spill is not None:
            try:
                append_spill(self._spill, records)
            except Exception as exc:  # disk dead, or a record that is not a CallRecord
                reason = f"cannot write {self._spill}: {getattr(exc, 'strerror', None) or exc}"
            else:
                with self._lock:
                    self.spilled += len(records)
                log.error("calls not stored before stop; spilled for the next start",
                          calls=len(records), spill_file=str(self._spill))
                return
        else:
            reason = "no spill file for this database"
        with self._lock:
            self.lost += len(records)
        log.error("calls not stored before stop and not spilled: their records follow",
                  calls=len(records), reason=reason)
        for record in records:
            try:
                text = encode_record(record)
            except Exception:  # not JSON-able as a CallRecord: as best it can be
                text = describe_record(record)
            log.error("call not stored", call_id=getattr(record, "call_id", None), record=text)


def load_spill(store: CallStore, path: Path,
               store_batch: Callable[[list[CallRecord]], bool]) -> int:
    """Store a spill file's calls with `store_batch` (False: not stored, e.g. stopped first),
    then remove the file; returns how many calls it held. The file stays until its calls are
    stored: a load cut short is done again at the next start (a call stored again replaces
    its row, so each is stored once). OSError if the file cannot be read or removed."""
    contents = read_spill(path)
    if not contents.size:
        return 0
    if contents.records and not store_batch(contents.records):
        return 0
    set_aside(store, path, contents.unreadable)
    clear_spill(path, contents)
    log.info("calls from the spill file stored", calls=len(contents.records),
             spill_file=str(path))
    return len(contents.records)


def set_aside(store: CallStore, path: Path, lines: Iterable[UnreadableLine]) -> None:
    """Lines of a spill file that are not calls (a torn last line after a crash): into
    `rejected`; if that fails, into the log. Never stops the calls around them."""
    for line in lines:
        reason = f"{path} line {line.number} is not a call: {line.reason}"
        try:
            store.reject(None, line.text, reason)
        except Exception as exc:
            log.error("spill file line unreadable and not set aside", spill_file=str(path),
                      line=line.number, text=line.text, reason=line.reason, error=str(exc))
        else:
            log.error("spill file line unreadable; set aside in table rejected",
                      spill_file=str(path), line=line.number, reason=line.reason)
