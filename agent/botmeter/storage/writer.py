"""A background writer, so storing calls never stalls event handling.

While running, a batch the database cannot take (locked, disk full, its file deleted) is
retried with backoff and never dropped; a record the database refuses is set aside in `rejected` (see `guard`).
With a rating saver (`storage.rated_saver`) each call is stored with its amount, in the same
transaction. On `close(deadline)`, calls that cannot be stored by the deadline go to the
spill file next to the database, which the next start stores before anything else.
"""

from __future__ import annotations

import sqlite3
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
from .reopen import at_path
from .spill import UnreadableLine, append_spill, clear_spill, encode_record, read_spill
from .store import BUSY_TIMEOUT, CallStore, StoreError
from .trouble import Notice, TroubleWatch, classify, describe

log = structlog.get_logger(__name__)

#: seconds kept before the deadline for writing the spill file (at most a quarter of the time)
SPILL_RESERVE = 1.0
#: how long `close()` gives the writer when no deadline is given
DEFAULT_CLOSE_SECONDS = 20.0
#: the retry schedule while the database refuses writes: 0.1-0.2 s doubling to 2.5-5 s
RETRY_MIN, RETRY_MAX = 0.2, 5.0
#: seconds between checks, while no call comes, that the database file is still there
FILE_CHECK_SECONDS = 5.0
#: what opening the database may raise that a retry may mend (while running, a permanent
#: StoreError too: the calls wait for someone to put the right file back)
OPEN_TROUBLE = (StoreError, sqlite3.Error, OSError, MemoryError)


class RecordWriter:
    """Queue records from the event loop; a thread stores them at once, in batches under load.

    `saver` stores one batch (default: `store.save(records)`, unrated; a `RatedSaver` rates
    them in the same transaction). With a `spill` path, the thread first stores the calls a
    previous run spilled there. Counters: `saved`, `rejected` (set aside), `spilled` (to the
    spill file at close), `lost` (not even spilled: their records are in the log),
    `recovered` (from the spill file).

    Database trouble never ends the thread: a database that cannot be opened (but for the
    errors no retry mends, which `start()` raises) or that refuses a batch is tried again with
    backoff, one log line when the trouble starts, a reminder a minute, one when it clears
    (`trouble` is the episode under way). Before each batch, and every `check_every` seconds
    while idle, the writer checks that the path still leads to the file it has open: a file
    deleted or replaced is logged and the database at the path opened (created) instead.
    """

    def __init__(self, store_factory: Callable[[], CallStore], *,
                 saver: SaveBatch | None = None, max_batch: int = 1000,
                 on_error: Callable[[BaseException, int], None] | None = None,
                 on_saved: Callable[[list[CallRecord]], None] | None = None,
                 spill: Path | None = None, backoff: Backoff | None = None,
                 check_every: float = FILE_CHECK_SECONDS,
                 on_rejected: Callable[[CallRecord], None] | None = None) -> None:
        self._factory = store_factory
        self._store: CallStore | None = None
        self._on_error = on_error
        self._on_saved = on_saved
        self._spill = spill
        self._guard = GuardedSaver(saver, on_saved=self._stored, on_rejected=on_rejected)
        self._drain: DrainThread[CallRecord] = DrainThread(
            "botmeter-writer", self._handle, max_batch=max_batch, setup=self._open,
            first=self._first, teardown=self._close_store, idle=self._check_file,
            idle_every=check_every)
        self._backoff = backoff or Backoff(RETRY_MIN, RETRY_MAX, sleep=self._drain.pause)
        self._lock = threading.Lock()
        self._inflight: list[CallRecord] = []  # taken from the queue, not stored yet
        self._inflight_spilled = False  # ...and read from the spill file (already in it)
        self._closed = False
        #: the database's path, for the log (known once opened, or from the error opening it)
        self.db: str | None = None
        #: the database trouble under way (None: storing works)
        self.trouble = TroubleWatch()
        self._last_attempt = 0.0  # seconds the last successful attempt took
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
        """Start the thread; it opens the database. StoreError if no retry can mend what
        opening it says (`StoreError.permanent`); any other trouble is retried."""
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
        """The first attempt to open the database: what no retry mends is raised (to
        `start()`), other trouble is noted and retried by `_first`."""
        began = time.monotonic()
        try:
            self._current_store()
        except OPEN_TROUBLE as exc:
            if isinstance(exc, StoreError) and exc.permanent:
                raise
            self._failed(exc, began)

    def _first(self) -> None:
        """Wait until the database opens (retrying), then store the calls a previous run
        spilled."""
        if self._retry(lambda _store: None):
            self._working_again(0)
            self._recover()

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()

    def _handle(self, batch: list[CallRecord]) -> bool:
        return self._save(batch)

    def _save(self, batch: list[CallRecord], *, from_spill: bool = False) -> bool:
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
        if not self._retry(self._store_inflight):
            return False
        with self._lock:
            self._inflight = []
        self._committed(self._last_attempt, len(batch))
        self._working_again(len(batch))
        return True

    def _store_inflight(self, store: CallStore) -> None:
        """Store the batch in flight; on StoreUnavailable it keeps the calls not stored."""
        try:
            self._guard(store, self._inflight)
        except StoreUnavailable as exc:
            with self._lock:
                if not self._closed:
                    self._inflight = exc.remaining
            raise

    def _retry(self, attempt: Callable[[CallStore], None]) -> bool:
        """`attempt(store)` until it succeeds, on the database at the path (opened, or opened
        anew when its file was deleted or replaced), trouble retried with backoff; False if
        the stop's deadline comes first."""
        while True:
            left = self._drain.time_left()
            if left is not None and (left <= 0 or self._closed):
                return False
            began = self.attempt_started = time.monotonic()
            try:
                store = self._current_store()
                if left is not None:
                    store.set_busy_timeout(min(BUSY_TIMEOUT, left))
                attempt(store)
            except StoreUnavailable as exc:
                self._failed(exc.cause, began)
            except OPEN_TROUBLE as exc:
                self._failed(exc, began)
            else:
                self.attempt_started = None
                self._last_attempt = time.monotonic() - began
                self._backoff.reset()
                return True
            self._backoff.wait(self._drain.time_left())  # a stop cuts one wait short

    def _current_store(self) -> CallStore:
        """The open database while its path still leads to it; else (never opened, or its
        file deleted or replaced: logged) the database at the path, opened or created."""
        store, self._store = self._store, None  # None until one is open
        self._store = at_path(store, self._factory, calls_waiting=self.queued())
        self.db = str(self._store.path)
        return self._store

    def _check_file(self) -> None:
        """While idle: the database's file still there (else a new one at the path), or the
        database that could not be opened tried again."""
        if self._store is not None and self._store.file_change() is None:
            return
        began = time.monotonic()
        try:
            self._current_store()
        except OPEN_TROUBLE as exc:
            self._failed(exc, began)
        else:
            self._working_again(0)

    def _failed(self, exc: BaseException, began: float) -> None:
        """An attempt that began at `began` failed: noted for health, logged when the trouble
        starts, changes, or has lasted another minute."""
        self.attempt_started = None
        self.db = getattr(exc, "path", None) or self.db
        error = describe(exc)
        self.failing = error
        notice = self.trouble.failed(classify(exc), error, began, time.monotonic())
        trouble = self.trouble.current
        if notice is not None and trouble is not None:
            event = ("storing calls failed; retrying" if notice is Notice.STARTED
                     else "storing calls still failing; retrying")
            log.error(event, db=self.db, trouble=trouble.kind, error=error,
                      calls_waiting=self.queued(),
                      failing_seconds=round(trouble.seconds(time.monotonic()), 1))
        if self._on_error is not None:
            self._on_error(exc, len(self._inflight))

    def _working_again(self, calls: int) -> None:
        """An attempt succeeded: the end of the trouble, if there was any, logged."""
        self.failing = None
        ended = self.trouble.cleared()
        if ended is not None:
            log.info("storing calls works again", db=self.db, trouble=ended.kind,
                     failed_seconds=round(ended.seconds(time.monotonic()), 1),
                     calls_stored=calls, calls_waiting=self.queued())

    def _committed(self, seconds: float, calls: int) -> None:
        self.busy_since = None
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
                store, path, lambda records: self._save(records, from_spill=True))
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
