"""A job the running agent repeats on a thread of its own, over a database connection of its
own, so the event loop never waits for it: the budget check, the retention purge."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from .storage.reopen import at_path
from .storage.store import CallStore

log = structlog.get_logger(__name__)


class PeriodicJob:
    """Runs `job(store)` at `start()` and then every `interval` seconds (or at once after
    `wake()`), on a daemon thread. The connection is opened by `store_factory` at the first
    run (and again if the database's file was deleted or replaced); a run that fails is logged (`failure`, the error) and tried again at the next."""

    def __init__(self, name: str, store_factory: Callable[[], CallStore],
                 job: Callable[[CallStore], object], *, interval: float, failure: str) -> None:
        self._factory, self._job = store_factory, job
        self.interval, self._failure = interval, failure
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run the job again now (once the run in progress, if any, has ended)."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """Whether `stop()` was called: a long job ends early."""
        return self._stop.is_set()

    def stop(self, timeout: float = 1.0) -> bool:
        """Ask the thread to end; whether it did within `timeout` seconds."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    def _run(self) -> None:
        store: CallStore | None = None
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    store = at_path(store, self._factory)
                    self._job(store)
                except Exception as exc:  # the next run tries again
                    log.error(self._failure, error=str(exc), error_type=type(exc).__name__)
                self._wake.wait(self.interval)
        finally:
            if store is not None:
                store.close()
