"""Hostile JSON-lines invoices for the column-wise reader (`columnar_jsonl`): what once made it
read otherwise than the line-by-line reader (`Invoice.batches`), or hold more memory than a
batch should. Each test is a defect found by differential fuzzing, kept so it stays fixed.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botmeter.reconcile import columnar
from botmeter.reconcile.invoice import MAX_DEPTH

from .test_reconcile_columnar import Reading, by_columns, by_lines, check, fresh, mapping, write
from .test_reconcile_columnar_jsonl import jsonl, line

_L = line()


def nested(depth: int) -> str:
    """The good line with an unmapped key holding lists `depth` deep."""
    return _L[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"


def deeper(frames: int, call: Callable[[], Any]) -> Any:
    """`call()` with `frames` more frames on the stack."""
    return call() if frames == 0 else deeper(frames - 1, call)


def test_how_deep_a_line_may_nest_does_not_depend_on_the_stack(tmp_path: Path) -> None:
    """Python's parser stops at the recursion limit less the stack in use: a line nested 989
    deep was read column-wise (from a worker thread's short stack) and refused line by line
    (from a longer one). Now a line nested deeper than MAX_DEPTH (its object one level) is
    refused by both, however deep the stack they are read from; one MAX_DEPTH deep is read by
    both, and brackets in strings do not count."""
    how = mapping()
    for depth in (900, 989, 1030, MAX_DEPTH - 1, MAX_DEPTH):
        path = write(tmp_path, jsonl(_L, nested(depth), line(x="[" * depth)), "usage.jsonl")
        column_wise = by_columns(path, how)
        for frames in (0, 300):
            assert deeper(frames, lambda p=path: by_lines(p, how)) == column_wise, (depth, frames)
        assert isinstance(column_wise, Reading)
        assert [row[0] for row in column_wise.rows] == (
            [1, 2, 3] if depth < MAX_DEPTH else [1, 3])
        check(path, how, plain=True)


def test_python_memory_stays_bounded_for_short_lines(tmp_path: Path) -> None:
    """A megabyte of short lines is some 500,000 of them: all split at once, they took 28 MB
    of Python objects here, 41 MB under tracemalloc (a batch of good lines takes some 7). Now
    at most LINES_AT_ONCE lines are Python objects at a time."""
    path = tmp_path / "usage.jsonl"
    with path.open("w", encoding="utf-8") as out:
        out.write(_L + "\n")
        out.write("{}\n" * 300_000 + " \n" * 300_000 + "1\n" * 300_000)
        out.write(_L + "\n")
    invoice = fresh(path, mapping())
    tracemalloc.start()
    try:
        rows = sum(batch.num_rows for batch in columnar.arrow_batches(invoice))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == 2 and invoice.problems.count == 600_000 and invoice.lines_read == 600_002
    assert peak < 12 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"
