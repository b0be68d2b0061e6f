"""Log lines from several threads (event loop, writer, re-rater) never interleave."""

from __future__ import annotations

import io
import json
import sys
import threading

import pytest
import structlog

from botmeter.logs import _named_logger_factory, setup_logging


def test_every_logger_shares_one_lock_for_stderr() -> None:
    named_logger = _named_logger_factory()
    first, second = named_logger("botmeter.service"), named_logger("botmeter.rerating")
    assert first._lock is second._lock  # print() writes the text and the newline apart


def test_threads_logging_at_once_write_whole_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    saved = structlog.get_config()
    setup_logging(json=True)
    try:
        _log_from_threads()
    finally:
        structlog.configure(**saved)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2000 and all(json.loads(line)["event"] == "line" for line in lines)


def _log_from_threads() -> None:
    """Four threads, 500 lines each, at once."""

    def spam(name: str) -> None:
        log = structlog.get_logger(name)
        for i in range(500):
            log.info("line", i=i)

    threads = [threading.Thread(target=spam, args=(f"botmeter.t{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
