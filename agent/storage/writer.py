"""A background writer, so storing calls never stalls event handling.

A batch the database cannot take (locked, disk full) is retried with backoff; a record the
database refuses is set aside in `rejected` and the rest of its batch stored (see `guard`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from ..tracking.record import CallRecord
from .guard import GuardedSaver, StoreUnavailable
from .store import CallStore

_STOP = object()


class RecordWriter:
    """Queue records from the event loop; a thread stores them at once, in batches under load."""

    def __init__(self, store_factory: Callable[[], CallStore], *,
                 max_batch: int = 1000, on_error: Callable[[Exception, int], None] | None = None,
                 on_saved: Callable[[list[CallRecord]], None] | None = None) -> None:
        self._factory = store_factory
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._on_error = on_error
        self._on_saved = on_saved
        self._guard = GuardedSaver(on_saved=self._stored)
        self._thread = threading.Thread(target=self._run, name="botmeter-writer", daemon=True)
        self._ready = threading.Event()
        self._failure: Exception | None = None
        self.saved = 0

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

    def close(self, timeout: float | None = 30.0) -> None:
        """Store everything queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            store = self._factory()
        except Exception as exc:  # surfaced by start()
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._next_batch()
                self._store(store, batch, stopping)
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

    def _store(self, store: CallStore, batch: list[CallRecord], stopping: bool) -> None:
        """Save the batch; while the database is unavailable keep retrying with backoff (a few
        times when stopping); a record it refuses is set aside and the rest stored."""
        attempt = 0
        while batch:
            try:
                self._guard(store, batch)
            except StoreUnavailable as exc:  # disk full, database locked
                batch = exc.remaining
                attempt += 1
                if self._on_error is not None:
                    self._on_error(exc.cause, len(batch))
                if stopping and attempt >= 3:
                    return
                time.sleep(min(5.0, 0.1 * 2 ** attempt))
            else:
                return

    def _stored(self, batch: list[CallRecord]) -> None:
        self.saved += len(batch)
        if self._on_saved is not None:
            self._on_saved(batch)
