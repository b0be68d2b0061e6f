"""Hostile JSON-lines invoices for the column-wise reader (`columnar_jsonl`): what once made it
read otherwise than the line-by-line reader (`Invoice.batches`), or hold more memory than a
batch should. Each test is a defect found by differential fuzzing, kept so it stays fixed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from botmeter.reconcile import columnar_jsonl, invoice
from botmeter.reconcile.invoice import MAX_DEPTH, MAX_PROBLEMS
from botmeter.reconcile.mapping import InvoiceMapping

from .test_reconcile_columnar import (
    COLUMNS,
    ROOT,
    Reading,
    by_columns,
    by_lines,
    check,
    fresh,
    mapping,
    read_traced,
    write,
)
from .test_reconcile_columnar_jsonl import GOOD_LINE, jsonl, line

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



def test_how_deep_a_line_nests_is_found_in_time_linear_in_its_length(tmp_path: Path) -> None:
    """Many brackets, then escaped quotes never closed: finding the strings tried each quote
    to the end (11 s a line of 60,000 characters; 40 such lines, 15 minutes). Read in a
    subprocess given a minute, some hundred times what it takes."""
    bad = "[" * (MAX_DEPTH + 1) + '\\"' * 30_000
    path = write(tmp_path, jsonl(_L, *[bad] * 40, _L), "usage.jsonl")
    script = f"""
from pathlib import Path
from botmeter.reconcile.invoice import Invoice, Problems
from botmeter.reconcile.mapping import InvoiceMapping
invoice = Invoice(Path({str(path)!r}), InvoiceMapping.model_validate({{"columns": {COLUMNS!r}}}),
                  "CNY", Problems())
print(sum(map(len, invoice.batches())), invoice.problems.count)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT / "agent")})
    assert done.stdout == "2 40\n", done.stderr

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
    rows, peak = read_traced(invoice)
    assert rows == 2 and invoice.problems.count == 600_000 and invoice.lines_read == 600_002
    assert peak < 12 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


# --- generated hostile files ----------------------------------------------------------------

KEYS = {**COLUMNS, "minutes": "Minutes", "currency": "Currency"}
#: JSON values as written: numbers of every form (0, -0, near 2^63 and 2^64, exponents, 1.0),
#: strings of odd escapes, constants only Python reads, containers, nesting near the limits
RAW = ["0", "-0", "1", "-1", "60", "1.0", "1e2", "1E+2", "-0.0", "0.12", "9223372036854775807",
       "9223372036854775808", "18446744073709551615", "18446744073709551616",
       "-9223372036854775809", "1" * 25, "1e400", "NaN", "-Infinity", "true", "null", "[]",
       "{}", '"\\ud800"', '"\\udc00x"', '"\\ud83d\\ude00"', '"\\u0000"', '"\\ufffd"',
       '"\ufffd"', '"\\u0031\\u0033\\u0039\\u0030\\u0030\\u0030\\u0031\\u0031\\u0031\\u0031"',
       '"2026-11-03T09:15:02\\u005a"', '" 60\\t"', '"1\\u002c5"', '"\\u00a0"', "01", ".5",
       "[" * 499 + "]" * 499, "[" * 500 + "]" * 500, "[" * 1030 + "]" * 1030,
       '{"a":' * 300 + "1" + "}" * 300]
TEXTS = ["", " ", "13900001111", "+8613900001111", "0139", "2026-11-01T01:30:00",
         "2026-03-08T02:30:00", "2026-11-03 09:15:02.5+08:00", "2100-02-29T00:00:00Z",
         "2026-11-03T24:00:00Z", "2026-11-03T09:15:02+24:00", "0001-01-01T00:00:00Z", "60",
         "1,5", "1.234,56", "cny", "USD", "s\x01", "\u3000", "\x85", "\u2028", "会话", "x" * 201,
         "\r\n", "6\x1f0", '"', "\\"]
BLANKS = ["", " ", "\t", "\x0c", "\x0b", "\x1c", "\x1f", "\x85", "\u3000", "\u2028", "\xa0"]
SPLICED = ["\x00", "\x0c", "\x1c", "\x7f", "\x85", "\u2028", '"', "\\", "\\u", "{", "}", ",", ":"]


@st.composite
def hostile_line(draw: st.DrawFn) -> str:
    """An object with each mapped key written plainly or with escapes, maybe twice with
    values of other types, odd values and other keys; or a blank or bad line; maybe with odd
    characters spliced in or around."""
    kind = draw(st.sampled_from(["object", "object", "object", "blank", "bad"]))
    if kind == "blank":
        return draw(st.sampled_from(BLANKS))
    if kind == "bad":
        return draw(st.sampled_from(["{", "[1]", "3", '"x"', "{bad", "{} {}", '{"a":1,}']))
    pairs = []
    for key in draw(st.permutations(list(KEYS.values()))):
        for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2]))):
            written = "".join(f"\\u{ord(c):04x}" if draw(st.booleans()) else c for c in key) \
                if draw(st.integers(0, 4)) == 0 else key
            value = draw(st.sampled_from([json.dumps(GOOD_LINE.get(key, "CNY")), *RAW,
                                          *map(json.dumps, TEXTS)]))
            pairs.append(f'"{written}": {value}')
    text = "{" + draw(st.sampled_from([", ", ",", " ,\t"])).join(pairs) + "}"
    if draw(st.integers(0, 5)) == 0:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(SPLICED)) + text[at:]
    return draw(st.sampled_from(["", "", " ", "\u3000"])) + text + draw(
        st.sampled_from(["", "", " ", "\x1c", "\x0c"]))


@st.composite
def hostile_mappings(draw: st.DrawFn) -> InvoiceMapping:
    columns = {k: v for k, v in KEYS.items() if k in ("caller_number", "started_at", "amount")
               or draw(st.booleans())}
    if "seconds" not in columns:
        columns["minutes"] = KEYS["minutes"]
    fmt: dict[str, Any] = {}
    if zone := draw(st.sampled_from([None, "Asia/Shanghai", "America/New_York",
                                     "Australia/Lord_Howe", "Pacific/Chatham"])):
        fmt["timezone"] = zone
    if code := draw(st.sampled_from([None, "86", "1", "880"])):
        fmt["country_code"] = code
    if draw(st.booleans()):
        fmt["decimal_comma"] = True
    if currency := draw(st.sampled_from([None, "CNY", "USD"])):
        fmt["currency"] = currency
    return InvoiceMapping.model_validate({"columns": columns, "format": fmt})


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lines=st.lists(hostile_line(), min_size=1, max_size=30),
       ends=st.lists(st.sampled_from(["\n", "\r\n"]), min_size=1),
       bom=st.booleans(), how=hostile_mappings(),
       at_once=st.sampled_from([1, 2, 3, 10_000]), kept=st.sampled_from([1, 2, 5, MAX_PROBLEMS]))
def test_hostile_files_read_the_same_both_ways(
        tmp_path: Path, monkeypatch: Any, lines: list[str], ends: list[str], bom: bool,
        how: InvoiceMapping, at_once: int, kept: int) -> None:
    """Generated files of escaped and repeated keys, numbers of every form, odd strings, odd
    white space, bytes spliced in, CR LF mixed; batches of a few lines and few problems kept,
    so that batches end in runs of bad lines and the problems kept are cut: both readers the
    same, or the file declined."""
    monkeypatch.setattr(columnar_jsonl, "LINES_AT_ONCE", at_once)
    monkeypatch.setattr(invoice, "MAX_PROBLEMS", kept)
    text = "".join(text + ends[i % len(ends)] for i, text in enumerate(lines))
    path = write(tmp_path, ("\ufeff" if bom else "").encode() + text.encode(), "usage.jsonl")
    column_wise = by_columns(path, how)
    event("read column-wise" if column_wise is not None else "declined")
    if column_wise is not None:
        assert column_wise == by_lines(path, how)
