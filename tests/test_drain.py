"""The queue-draining thread shared by the record writer and the re-rating worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import structlog

from botmeter.drain import DrainThread

from .helpers import eventually_sync


class Gate:
    """A handler that records its batches and, while closed, holds the thread in it."""

    def __init__(self, *, open_: bool = True) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self._open = threading.Event()
        if open_:
            self._open.set()

    def open(self) -> None:
        self._open.set()

    def __call__(self, batch: list[int]) -> None:
        self.batches.append(batch)
        self.entered.set()
        self._open.wait(10)


def test_batches_form_only_under_load_and_keep_the_order() -> None:
    gate = Gate(open_=False)
    drain: DrainThread[int] = DrainThread("t-load", gate, max_batch=4)
    drain.start()
    drain.submit(0)
    assert gate.entered.wait(5)  # alone: handled at once, in a batch of one
    for i in range(1, 10):  # queued while the handler is busy
        drain.submit(i)
    gate.open()
    assert drain.close(time.monotonic() + 5)
    assert gate.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


def test_close_handles_what_was_queued_before_it() -> None:
    gate = Gate()
    drain: DrainThread[int] = DrainThread("t-close", gate)
    drain.start()
    for i in range(100):
        drain.submit(i)
    assert drain.close(time.monotonic() + 5) and not drain.alive
    assert [i for batch in gate.batches for i in batch] == list(range(100))
    assert drain.take_queued() == []


def test_close_gives_up_at_the_deadline_and_leaves_the_rest_to_the_owner() -> None:
    gate = Gate(open_=False)
    drain: DrainThread[int] = DrainThread("t-stuck", gate)
    drain.start()
    drain.submit(1)
    assert gate.entered.wait(5)
    drain.submit(2)
    drain.submit(3)
    start = time.monotonic()
    assert not drain.close(start + 0.2)
    assert time.monotonic() - start < 2.0 and drain.alive
    assert drain.take_queued() == [2, 3]  # never handed to the handler
    gate.open()
    assert drain.join(time.monotonic() + 5)  # the stop stays asked for after take_queued
    assert gate.batches == [[1]]


def test_the_handler_sees_the_deadline_and_can_stop_early() -> None:
    seen: list[float | None] = []

    def handle(batch: list[int]) -> bool:
        seen.append(drain.time_left())
        return False  # e.g. out of time: stop here

    drain: DrainThread[int] = DrainThread("t-early", handle)
    assert drain.time_left() is None and not drain.stopping
    drain.start()
    drain.submit(1)
    eventually_sync(lambda: not drain.alive)
    drain.submit(2)
    assert drain.take_queued() == [2] and seen == [None]


def test_setup_failure_is_raised_by_start_and_hooks_run_in_the_thread() -> None:
    def setup() -> None:
        raise OSError("cannot open")

    drain: DrainThread[int] = DrainThread("t-fail", Gate(), setup=setup)
    with pytest.raises(OSError, match="cannot open"):
        drain.start()
    assert drain.join(time.monotonic() + 5)

    where: list[tuple[str, str]] = []

    def hook(step: str) -> Callable[[], None]:
        return lambda: where.append((step, threading.current_thread().name))

    drain = DrainThread("t-hooks", lambda batch: where.append(("handle", str(batch))),
                        setup=hook("setup"), first=hook("first"), teardown=hook("teardown"))
    drain.start()
    drain.submit(7)
    assert drain.close(time.monotonic() + 5)
    assert where == [("setup", "t-hooks"), ("first", "t-hooks"), ("handle", "[7]"),
                     ("teardown", "t-hooks")]


def test_an_error_in_the_handler_ends_the_thread_with_a_log_line_and_teardown() -> None:
    closed = threading.Event()

    def handle(batch: list[int]) -> None:
        raise RuntimeError("bug")

    drain: DrainThread[int] = DrainThread("t-bug", handle, teardown=closed.set)
    with structlog.testing.capture_logs() as logs:
        drain.start()
        drain.submit(1)
        eventually_sync(lambda: not drain.alive)
    assert closed.is_set()
    [line] = [e for e in logs if e["event"] == "background thread stopped by an unexpected error"]
    assert line["thread"] == "t-bug" and "bug" in line["error"]


def test_a_stop_cuts_one_pause_short() -> None:
    drain: DrainThread[int] = DrainThread("t-pause", Gate())
    assert drain.pause(0) is False
    result: list[bool] = []
    pausing = threading.Thread(target=lambda: result.append(drain.pause(30)))
    start = time.monotonic()
    pausing.start()
    drain.stop(time.monotonic() + 1)  # the thread was never started: stop only wakes
    pausing.join(5)
    assert result == [True] and time.monotonic() - start < 5
    assert drain.pause(0.01) is False  # once
