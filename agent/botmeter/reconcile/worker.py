"""Work in a thread of its own while the main thread waits or does other work.

The thread starts with Ctrl-C and SIGTERM blocked, so that the kernel hands them to the main
thread: one delivered to the worker would leave the main thread blocked (in a read of a pipe,
a join) with the Python handler never run. `result()` waits and re-raises the work's error;
`cancel()` asks the work to stop and waits for it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


@contextmanager
def stops_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back for the block (a cleanup that a second Ctrl-C must not cut
    short), delivered when it ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Worker(Generic[T]):
    def __init__(self, name: str, work: Callable[[], T], stop: Callable[[], None]) -> None:
        self._stop = stop
        self._error: BaseException | None = None
        self._value: T | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        with stops_held():  # the thread inherits the mask
            self._thread.start()

    def _run(self, work: Callable[[], T]) -> None:
        try:
            self._value = work()
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> T:
        """Wait for the work (a signal to the main thread interrupts the wait: the caller
        then cancels it): what it returned, or its error raised. The wait is on an Event:
        Thread.join interrupted by Ctrl-C takes the thread for ended (CPython 3.11), and the
        process would then exit with it still running."""
        self._done.wait()
        self._thread.join()  # its work is over: at once
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def cancel(self) -> None:
        """Stop the work (an interrupt, an error elsewhere) and wait for it to end (a second
        Ctrl-C meanwhile waits too)."""
        self._stop()
        with stops_held():
            self._done.wait()
            self._thread.join()
