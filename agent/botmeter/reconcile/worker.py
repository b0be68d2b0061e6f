"""Work in a thread of its own while the main thread waits or does other work.

The thread starts with Ctrl-C and SIGTERM blocked, so that the kernel hands them to the main
thread: one delivered to the worker would leave the main thread blocked (in a read of a pipe,
a join) with the Python handler never run. `result()` waits and re-raises the work's error;
`cancel()` asks the work to stop and waits for it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Worker(Generic[T]):
    def __init__(self, name: str, work: Callable[[], T], stop: Callable[[], None]) -> None:
        self._stop = stop
        self._error: BaseException | None = None
        self._value: T | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        stopping = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _run(self, work: Callable[[], T]) -> None:
        try:
            self._value = work()
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> T:
        """Wait for the work (a signal to the main thread interrupts the wait: the caller
        then cancels it): what it returned, or its error raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def cancel(self) -> None:
        """Stop the work (an interrupt, an error elsewhere) and wait for it."""
        self._stop()
        self._thread.join()
