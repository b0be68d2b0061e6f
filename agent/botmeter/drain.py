"""A thread that drains a queue in batches: the record writer's and the re-rating worker's.

The thread waits for an item, takes whatever else is already queued (up to `max_batch`; so
batches form only under load) and hands the batch to `handle`. `close(deadline)` lets it
handle what was queued before the close, until `deadline` (a `time.monotonic()`); the
handler sees the deadline (`time_left()`) and can stop early by returning False. What the
thread did not take is left for the owner (`take_queued()`), e.g. to spill it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
Hook = Callable[[], None]
_STOP = object()


class DrainThread(Generic[T]):
    """One daemon thread draining one queue into `handle(batch)`.

    Hooks, all run in the thread: `setup` first (an exception it raises is raised again by
    `start()`, and the thread ends), then `first` (e.g. loading leftovers of a previous run;
    `start()` does not wait for it), `idle` whenever `idle_every` seconds pass without an item
    (e.g. a periodic check), `teardown` last, whatever happened. An exception from
    `handle` or `first` ends the thread with one log line; the owner's `close` deals with
    what is left.
    """

    def __init__(self, name: str, handle: Callable[[list[T]], bool | None], *,
                 max_batch: int = 1000, setup: Hook | None = None, first: Hook | None = None,
                 teardown: Hook | None = None, idle: Hook | None = None,
                 idle_every: float = 5.0) -> None:
        self.name = name
        self._handle = handle
        self._max_batch = max_batch
        self._setup = setup
        self._first = first
        self._teardown = teardown
        self._idle = idle
        self._idle_every = idle_every
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self._wake = threading.Event()
        self._failure: BaseException | None = None
        self._stopping = False
        self.deadline: float | None = None

    # -- the owner's side ----------------------------------------------------------------

    def start(self) -> None:
        """Start the thread; once `setup` ran, return (or raise what it raised)."""
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    def submit(self, item: T) -> None:
        """Queue an item (from any thread)."""
        self._queue.put(item)

    def stop(self, deadline: float) -> None:
        """Ask the thread to end once it has handled what is queued now, by `deadline`."""
        self.deadline = deadline
        self._stopping = True
        self._queue.put(_STOP)
        self._wake.set()

    def join(self, deadline: float) -> bool:
        """Wait for the thread until `deadline`; whether it has ended."""
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def close(self, deadline: float) -> bool:
        """`stop(deadline)`, then `join(deadline)`: whether the thread ended in time."""
        self.stop(deadline)
        return self.join(deadline)

    def take_queued(self) -> list[T]:
        """Remove and return the items the thread has not taken yet."""
        items: list[T] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                items.append(item)  # type: ignore[arg-type]
        if self._stopping:
            self._queue.put(_STOP)
        return items

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def queued(self) -> int:
        """About how many items wait for the thread (for metrics)."""
        return self._queue.qsize()

    # -- the handler's side --------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether `stop()` was called."""
        return self._stopping

    def time_left(self) -> float | None:
        """Seconds until the stop's deadline (None before a stop)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def pause(self, seconds: float) -> bool:
        """Sleep `seconds`, cut short by `stop()` (once: a stop wakes one pause). True if cut short."""
        if self._wake.wait(max(0.0, seconds)):
            self._wake.clear()
            return True
        return False

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self._setup is not None:
                self._setup()
        except BaseException as exc:  # surfaced by start()
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            if self._first is not None:
                self._first()
            stopping = False
            while not stopping:
                batch, stopping = self._next_batch()
                if batch and self._handle(batch) is False:
                    return
        except Exception as exc:  # a bug: the owner's close() deals with what is left
            log.error("background thread stopped by an unexpected error", thread=self.name,
                      error=repr(exc))
        finally:
            if self._teardown is not None:
                self._teardown()

    def _next_batch(self) -> tuple[list[T], bool]:
        """Wait for an item, then take what else is queued; (batch, whether a stop came)."""
        item = self._wait_for_item()
        if item is _STOP:
            return [], True
        batch: list[T] = [item]  # type: ignore[list-item]
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)  # type: ignore[arg-type]
        return batch, False

    def _wait_for_item(self) -> object:
        """The next item; while none comes, `idle()` every `idle_every` seconds."""
        if self._idle is None:
            return self._queue.get()
        while True:
            try:
                return self._queue.get(timeout=self._idle_every)
            except queue.Empty:
                self._idle()
