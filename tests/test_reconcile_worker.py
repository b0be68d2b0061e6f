"""The reconcile's worker threads: a Ctrl-C while the main thread waits for one leaves it
running until it is cancelled and has ended (never a thread still running at exit)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest

from botmeter.reconcile.worker import Worker


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C as Python's default (other tests' event loops install their own handlers)."""
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, handler)


def test_cancel_after_an_interrupted_wait_waits_for_the_work_to_end(ctrl_c_raises):
    stop = threading.Event()
    ended = threading.Event()

    def work() -> None:
        stop.wait(10)
        time.sleep(0.2)  # winding down after being told to stop
        ended.set()

    worker = Worker("test-worker", work, stop.set)
    ctrl_c = threading.Timer(0.1, signal.pthread_kill,
                             (threading.main_thread().ident, signal.SIGINT))
    ctrl_c.start()
    with pytest.raises(KeyboardInterrupt):
        worker.result()
    assert not ended.is_set()
    worker.cancel()
    assert ended.is_set()  # Thread.join, interrupted once, would have returned at once


def test_its_threads_block_ctrl_c_and_sigterm():
    seen: list[set[int]] = []
    worker = Worker("test-worker", lambda: seen.append(signal.pthread_sigmask(
        signal.SIG_BLOCK, set())), lambda: None)
    worker.result()
    assert {signal.SIGINT, signal.SIGTERM} <= seen[0]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


def test_the_work_s_error_and_value_reach_the_caller():
    assert Worker("test-worker", lambda: 42, lambda: None).result() == 42

    def fails() -> None:
        raise ValueError("bad line")

    with pytest.raises(ValueError, match="bad line"):
        Worker("test-worker", fails, lambda: None).result()
