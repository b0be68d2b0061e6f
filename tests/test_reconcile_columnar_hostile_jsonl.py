"""Hostile JSON-lines invoices for the column-wise reader (`columnar_jsonl`): what once made it
read otherwise than the line-by-line reader (`Invoice.batches`), or hold more memory than a
batch should. Each test is a defect found by differential fuzzing, kept so it stays fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from botmeter.reconcile.invoice import MAX_DEPTH

from .test_reconcile_columnar import Reading, by_columns, by_lines, check, mapping, write
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

