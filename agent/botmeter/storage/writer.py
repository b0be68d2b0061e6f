"""A background writer, so storing calls never stalls event handling.

While running, a batch the database cannot take (locked, disk full) is retried with backoff
and never dropped; a record the database refuses is set aside in `rejected` (see `guard`).
With a rating saver (`storage.rated_saver`) each call is stored with its amount, in the same
transaction. On `close(deadline)`, calls that cannot be stored by the deadline go to the
spill file next to the database, which the next start stores before anything else.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from ..backoff import Backoff
from ..drain import DrainThread
from ..tracking.record import CallRecord
from .guard import GuardedSaver, SaveBatch, StoreUnavailable, describe_record
from .spill import UnreadableLine, append_spill, clear_spill, encode_record, read_spill
from .store import BUSY_TIMEOUT, CallStore

log = structlog.get_logger(__name__)

#: seconds kept before the deadline for writing the spill file (at most a quarter of the time)
SPILL_RESERVE = 1.0
#: how long `close()` gives the writer when no deadline is given
DEFAULT_CLOSE_SECONDS = 20.0
#: the retry schedule while the database refuses writes: 0.1-0.2 s doubling to 2.5-5 s
RETRY_MIN, RETRY_MAX = 0.2, 5.0


class RecordWriter:
    """Queue records from the event loop; a thread stores them at once, in batches under load.

    `saver` stores one batch (default: `store.save(records)`, unrated; a `RatedSaver` rates
    them in the same transaction). With a `spill` path, the thread first stores the calls a
    previous run spilled there. Counters: `saved`, `rejected` (set aside), `spilled` (to the
    spill file at close), `lost` (not even spilled: their records are in the log),
    `recovered` (from the spill file).
    """

    def __init__(self, store_factory: Callable[[], CallStore], *,
                 saver: SaveBatch | None = None, max_batch: int = 1000,
                 on_error: Callable[[BaseException, int], None] | None = None,
                 on_saved: Callable[[list[CallRecord]], None] | None = None,
                 spill: Path | None = None, backoff: Backoff | None = None,
                 on_rejected: Callable[[CallRecord], None] | None = None) -> None:
        self._factory = store_factory
        self._store: CallStore | None = None
        self._on_error = on_error
        self._on_saved = on_saved
        self._spill = spill
        self._guard = GuardedSaver(saver, on_saved=self._stored, on_rejected=on_rejected)
        self._drain: DrainThread[CallRecord] = DrainThread(
            "botmeter-writer", self._handle, max_batch=max_batch, setup=self._open,
            first=self._recover, teardown=self._close_store)
        self._backoff = backoff or Backoff(RETRY_MIN, RETRY_MAX, sleep=self._drain.pause)
        self._lock = threading.Lock()
        self._inflight: list[CallRecord] = []  # taken from the queue, not stored yet
        self._inflight_spilled = False  # ...and read from the spill file (already in it)
        self._closed = False
        #: time.monotonic() when the store attempt under way began (None between attempts)
        self.attempt_started: float | None = None
        self.saved = 0
        self.spilled = 0
        self.lost = 0
        self.recovered = 0
        self._by_outcome: Counter[str] = Counter()
        #: for health and metrics: seconds and calls of each commit (set before start)
        self.on_commit: Callable[[float, int], None] | None = None
        self.busy_since: float | None = None  # `time.monotonic()` a batch began; None: idle
        self.failing: str | None = None  # why the last try to store failed; None: it worked

    @property
    def rejected(self) -> int:
        return self._guard.rejected

    @property
    def running(self) -> bool:
        """Whether the writer's thread is alive (it ends only at close, or on a bug)."""
        return self._drain.alive

    def use_saver(self, saver: SaveBatch | None) -> None:
        """Store with `saver` from the next batch on (a reload that added or removed plans)."""
        self._guard.use(saver)

    def start(self) -> None:
        """Open the database in the writer's thread (raising what opening it raises) and start."""
        self._drain.start()

    def submit(self, record: CallRecord) -> None:
        self._drain.submit(record)

    def queued(self) -> int:
        """Calls waiting to be stored: queued, or taken in a batch not committed yet."""
        return self._drain.queued() + len(self._inflight)

    @property
    def alive(self) -> bool:
        return self._drain.alive

    def stored_by_outcome(self) -> dict[str, int]:
        """Calls stored in table calls since start, by outcome."""
        with self._lock:
            return dict(self._by_outcome)

    def close(self, deadline: float | None = None) -> None:
        """Store everything queued, then stop. What cannot be stored by `deadline`
        (`time.monotonic()`; default in 20 s) is appended to the spill file instead."""
        if deadline is None:
            deadline = time.monotonic() + DEFAULT_CLOSE_SECONDS
        if self._drain.alive:
            reserve = min(SPILL_RESERVE, max(0.0, deadline - time.monotonic()) / 4)
            self._drain.close(deadline - reserve)  # the thread gives up at deadline - reserve
        with self._lock:
            self._closed = True
            leftovers = [] if self._inflight_spilled else list(self._inflight)
            self._inflight = []
        leftovers += self._drain.take_queued()
        if leftovers:
            self._spill_out(leftovers)
        if self._drain.alive:  # still in a write: it spills whatever it holds after that
            self._drain.join(deadline)

    # -- the thread ----------------------------------------------------------------------

    def _open(self) -> None:
        self._store = self._factory()

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()

    def _handle(self, batch: list[CallRecord]) -> bool:
        assert self._store is not None
        return self._save(self._store, batch)

    def _save(self, store: CallStore, batch: list[CallRecord], *,
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
        self.busy_since = time.monotonic()
        while True:
            left = self._drain.time_left()
            if left is not None:
                if left <= 0 or self._closed:
                    return False
                store.set_busy_timeout(min(BUSY_TIMEOUT, left))
            started = self.attempt_started = time.monotonic()
            try:
                self._guard(store, batch)
            except StoreUnavailable as exc:
                self.attempt_started = None
                self.failing = str(exc.cause) or type(exc.cause).__name__
                batch = exc.remaining
                with self._lock:
                    if self._closed:
                        return False
                    self._inflight = batch
                if self._on_error is not None:
                    self._on_error(exc.cause, len(batch))
                self._backoff.wait(self._drain.time_left())  # a stop cuts one wait short
            else:
                self.attempt_started = None
                self._committed(time.monotonic() - started, len(batch))
                self._backoff.reset()
                with self._lock:
                    self._inflight = []
                return True

    def _committed(self, seconds: float, calls: int) -> None:
        self.failing = self.busy_since = None
        if self.on_commit is not None:
            self.on_commit(seconds, calls)

    def _stored(self, batch: list[CallRecord]) -> None:
        self.saved += len(batch)
        with self._lock:
            self._by_outcome.update(record.outcome for record in batch)
        if self._on_saved is not None:
            self._on_saved(batch)

    def _recover(self) -> None:
        """Store the calls a previous run spilled, then remove the spill file."""
        store, path = self._store, self._spill
        if store is None or path is None:
            return
        try:
            self.recovered = load_spill(
                store, path, lambda records: self._save(store, records, from_spill=True))
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
