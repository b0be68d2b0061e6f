"""The invoice's JSON lines read into columns (`columnar_jsonl`, parsed by orjson) against the
line-by-line reader (`Invoice.batches`, parsed by the standard library's json): for every file
the same rows, problems (in the same order), problem count and line count, or `NotColumnar`
and the line-by-line reader reads it all. Odd values as strings and as other JSON; odd lines
(JSON both parsers read alike, JSON only one of them takes, not JSON); odd files; batches and
the problems kept; generated files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botmeter.reconcile import columnar_jsonl
from botmeter.reconcile.invoice import MAX_LINE, MAX_PROBLEMS, Invoice, Problems
from botmeter.reconcile.mapping import InvoiceMapping

from .test_reconcile_columnar import (
    COLUMNS,
    GOOD,
    ODD_TIMES,
    ODD_VALUES,
    Reading,
    by_columns,
    by_lines,
    check,
    mapping,
    write,
)

GOOD_LINE: dict[str, Any] = dict(zip(COLUMNS.values(), GOOD, strict=True))


def line(**values: Any) -> str:
    """A JSON line: the good one with `values` (by JSON key) in place; `...` drops a key."""
    data = {**GOOD_LINE, **values}
    return json.dumps({k: v for k, v in data.items() if v is not ...}, ensure_ascii=False)


def jsonl(*lines: str, end: str = "\n") -> bytes:
    return "".join(text + end for text in lines).encode()


def check_jsonl(tmp_path: Path, content: bytes, how: InvoiceMapping | None = None, *,
                plain: bool = True, name: str = "usage.jsonl") -> None:
    check(write(tmp_path, content, name), how or mapping(timezone="Asia/Shanghai"), plain=plain)


# --- odd values -----------------------------------------------------------------------------

@pytest.mark.parametrize(("column", "value"), [
    pytest.param(column, value, id=f"{column}-{value[:24]!r}")
    for column, values in ODD_VALUES.items() for value in values])
def test_an_odd_text_between_good_lines(tmp_path: Path, column: str, value: str) -> None:
    odd = line(**{COLUMNS[column]: value})
    for fmt in ({}, {"decimal_comma": True}):
        check_jsonl(tmp_path, jsonl(line(), odd, line(), odd), mapping(**fmt))


#: JSON values that are not strings; their text, where the standard library gives one
OTHER_JSON = ["0", "-0", "60", "-5", "1e2", "1E2", "60.0", "60.5", "0.12", "-0.0",
              "99999999999999999999", "18446744073709551615", "9223372036854775808", "1" * 30,
              "true", "false", "null", "{}", "[]", '{"a": 1}', "[60]", "NaN", "Infinity",
              "-Infinity"]


@pytest.mark.parametrize("value", OTHER_JSON)
@pytest.mark.parametrize("column", list(COLUMNS))
def test_a_value_that_is_not_a_string(tmp_path: Path, column: str, value: str) -> None:
    """Numbers (whole, decimal, beyond 64 bits, -0), booleans, null, objects, arrays and
    Python's NaN and Infinity as a field's value: read as the standard library reads them (its
    number text, a problem for the others)."""
    good = line()
    odd = good.replace(json.dumps(GOOD_LINE[COLUMNS[column]]), value, 1)
    check_jsonl(tmp_path, jsonl(good, odd, good))


@pytest.mark.parametrize(("started", "zone"), [
    pytest.param(t, z, id=f"{t!r}-{z}") for t, z in ODD_TIMES])
def test_an_odd_time_between_good_lines(tmp_path: Path, started: str, zone: str | None) -> None:
    content = jsonl(line(), line(StartTime=started), line())
    check_jsonl(tmp_path, content, mapping(**({"timezone": zone} if zone else {})))


@pytest.mark.parametrize("currency", ["CNY", "cny", "USD", "", None, 1, "X" * 201])
@pytest.mark.parametrize("default", [None, "CNY", "USD"])
def test_a_currency_key(tmp_path: Path, currency: Any, default: str | None) -> None:
    how = mapping({**COLUMNS, "currency": "Currency"}, **({"currency": default} if default
                                                          else {}))
    content = jsonl(line(Currency="CNY"), line(Currency=currency), line(Currency=...))
    check_jsonl(tmp_path, content, how)


def test_seconds_and_minutes(tmp_path: Path) -> None:
    how = mapping({**COLUMNS, "minutes": "Minutes"})
    content = jsonl(line(Minutes=1.5), line(Duration=None, Minutes=2), line(Duration=...),
                    line(Duration="", Minutes=""), line(Duration=..., Minutes="1,5"),
                    line(Duration=" ", Minutes=" 2 "))
    check_jsonl(tmp_path, content, how)


# --- odd lines and files --------------------------------------------------------------------

_L = line()
FILES: dict[str, tuple[bytes, bool]] = {
    # name: (content, whether the columnar reader takes it)
    "plain": (jsonl(_L, line(CallSid="s-2"), line(CallSid=None)), True),
    "crlf": (jsonl(_L, _L, end="\r\n"), True),
    "crlf and lf mixed": (f"{_L}\r\n{_L}\n{_L}\r\n".encode(), True),
    "no end of line at the end": (f"{_L}\n{_L}".encode(), True),
    "bom at the start": (f"\ufeff{_L}\n{_L}\n".encode(), True),
    "blank lines": (f"\n\n{_L}\n\n \t\n{_L}\n\n".encode(), True),
    "lines of other white space": (f"{_L}\n\u3000\n\x1c\n\x0b\n\x85\n{_L}\n".encode(), True),
    "white space around": (f" \t{_L} \r\n{_L}\t\n".encode(), True),
    "keys missing": (jsonl(_L, line(CallSid=...), line(From=...), line(Charge=...), "{}"),
                     True),
    "other keys": (jsonl(line(x={"y": [1, {"z": None}]}, n=1.5, t=True), _L), True),
    "keys in other order": (jsonl(json.dumps(dict(reversed(GOOD_LINE.items()))), _L), True),
    "a key written with escapes": (jsonl(_L.replace('"From"', '"\\u0046rom"'), _L), True),
    "a key repeated": (jsonl(_L[:-1] + ', "CallSid": "s-9"}', _L[:-1] + ', "From": null}'),
                       True),
    "a value with escapes": (jsonl(line(CallSid="s\\u002d1"), line(CallSid='a"b\\'),
                                   _L.replace("s-1", "s\\u002d1"), _L.replace("s-1", "\\t")),
                             True),
    "an escaped nul and controls": (jsonl(_L.replace("s-1", "s\\u0000"),
                                          _L.replace("s-1", "\\u0001\\u001f\\u007f")), True),
    "a raw control character": (f"{_L}\n{_L.replace('s-1', 's' + chr(1))}\n{_L}\n".encode(),
                                True),
    "an escaped u+fffd": (jsonl(_L.replace("s-1", "\\ufffd"), _L), True),
    "a lone surrogate escaped": (jsonl(_L.replace("s-1", "\\ud800"),
                                       _L.replace("s-1", "\\udfff-x"), _L), True),
    "a surrogate pair escaped": (jsonl(_L.replace("s-1", "\\ud83d\\ude00"), _L), True),
    "a lone surrogate in another key": (jsonl(_L[:-1] + ', "x": "\\ud800"}', _L), True),
    "nested a little": (jsonl(_L[:-1] + ', "x": ' + "[" * 60 + "]" * 60 + "}", _L), True),
    "nested deeply": (jsonl(_L[:-1] + ', "x": ' + "[" * 900 + "]" * 900 + "}", _L), True),
    "nested too deeply": (jsonl(_L[:-1] + ', "x": ' + "[" * 3000 + "]" * 3000 + "}", _L),
                          True),
    "brackets in strings": (jsonl(line(x="{[" * 100), _L), True),
    "two objects on a line": (jsonl(_L + _L, _L + " " + _L, _L), True),
    "text after the object": (jsonl(_L + " x", _L + ",", _L), True),
    "not json": (jsonl(_L, "{bad", "{'a': 1}", '{"a": 1,}', "{/*c*/}", "", "}", _L), True),
    "not objects": (jsonl(_L, "3", "[1]", "null", '"x"', "true", "[]"), True),
    "nan and infinity elsewhere": (jsonl(_L[:-1] + ', "x": NaN, "y": -Infinity}', _L), True),
    "big numbers elsewhere": (jsonl(_L[:-1] + ', "x": 1e999, "y": ' + "9" * 400 + "}", _L),
                              True),
    "cjk everywhere": (jsonl(line(CallSid="会话", From="电话", StartTime="时间",
                                  Duration="六十", Charge="零点一二"), _L), True),
    "a value too long": (jsonl(line(CallSid="s" * 201), line(Charge=1 + 10 ** 250), _L), True),
    # the line-by-line reader stops: both do
    "a json document": (b'[\n' + jsonl(_L), True),
    "an object over several lines": (b'{\n"CallSid": "s"\n}\n', True),
    "the file empty": (b"", True),
    "blank only": (b"\n \n", True),
    "utf-16": (_L.encode("utf-16"), True),
    # declined: read line by line
    "a lone cr": (f"{_L}\r{_L}\n{_L}\n".encode(), False),
    "cr line ends": (f"{_L}\r{_L}\r".encode(), False),
    "a bom inside": (f"{_L}\n\ufeff{_L}\n".encode(), False),
    "two boms at the start": (f"\ufeff\ufeff{_L}\n".encode(), False),
    "not utf-8 in a line": (f"{_L}\n".encode() + _L.replace("s-1", "s").encode()
                            .replace(b'"s"', b'"s\xff"') + b"\n", False),
    "an encoded surrogate": (f"{_L}\n".encode() + _L.encode().replace(b"s-1", b"\xed\xa0\x80")
                             + b"\n", False),
    "u+fffd written in the file": (f"{_L}\n{line(CallSid=chr(0xfffd))}\n".encode(), True),
    "a line a little short of 64 kib": (jsonl(_L, line(x="x" * (MAX_LINE - 300)), _L), True),
    "a line near 64 kib": (jsonl(_L, line(x="x" * (MAX_LINE - 2 - len(line(x="")))), _L),
                           False),
    "a line over 64 kib": (jsonl(_L, line(x="x" * (MAX_LINE + 10)), _L), False),
}


@pytest.mark.parametrize("name", list(FILES))
def test_a_file_of_its_kind(tmp_path: Path, name: str) -> None:
    content, plain = FILES[name]
    check_jsonl(tmp_path, content, plain=plain)


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json", ".txt", ".csv", ""])
def test_json_lines_by_name_or_by_their_first_character(tmp_path: Path, suffix: str) -> None:
    check_jsonl(tmp_path, jsonl(_L, line(Charge="x")), name=f"usage{suffix}")


def test_what_it_reads_column_wise(tmp_path: Path) -> None:
    """The plain lines come in batches of their own; the odd ones are the LineReader's."""
    path = write(tmp_path, jsonl(_L, line(Charge="x"), line(Duration=90), line(Duration=0)),
                 "usage.jsonl")
    reading = by_columns(path, mapping())
    assert isinstance(reading, Reading)
    assert [row[0] for row in reading.rows] == [1, 3, 4]
    assert [row[8] for row in reading.rows] == ["60", "90", "0"]  # the durations as written
    assert reading.problems == [f"{path}:2: amount: 'x' is not a decimal number (a point for "
                                "decimals, no currency sign)"]


# --- batches and the problems kept ----------------------------------------------------------


@pytest.mark.parametrize("at_once", [3, 7, 5000])
def test_problems_across_batches_come_in_line_order(tmp_path: Path, monkeypatch: Any,
                                                    at_once: int) -> None:
    """Over 1 MiB and many batches, bad lines of every kind scattered (not JSON, not read
    by orjson, values not read, too long, blank): the same problems in line order both ways,
    those kept (the first MAX_PROBLEMS) the same, wherever the batches end."""
    monkeypatch.setattr(columnar_jsonl, "LINES_AT_ONCE", at_once)
    lines = []
    for i in range(12_000 if at_once > 3 else 8000):
        text = line(CallSid=f"s-{i}", From=f"139{i:08d}",
                    StartTime=f"2026-11-{1 + i % 28:02d}T09:{i % 60:02d}:02Z",
                    Duration=i % 300, Charge=f"0.{i % 100:02d}")
        if i % 11 == 7:
            text = text.replace(f'"0.{i % 100:02d}"', '"x"')  # a value not read
        elif i % 13 == 3:
            text = "{bad"  # not JSON
        elif i % 17 == 5:
            text = text.replace(f'"s-{i}"', "NaN")  # not orjson's: the standard library's
        elif i % 499 == 11:
            text = text.replace(f'"s-{i}"', json.dumps("s" * 300))  # too long
        elif i % 7 == 0:
            text = "  "
        lines.append(text)
    path = write(tmp_path, jsonl(*lines), "usage.jsonl")
    reading = by_lines(path, mapping())
    assert isinstance(reading, Reading) and reading.count > MAX_PROBLEMS
    numbers = [int(p.split(":")[1]) for p in reading.problems]
    assert numbers == sorted(numbers) and len(numbers) == MAX_PROBLEMS
    check(path, mapping(), plain=True)


def test_the_problems_kept_do_not_depend_on_the_line_readers_batches(tmp_path: Path) -> None:
    """Problems found as lines are split (not JSON) after problems found as values are read
    (a bad amount) in one batch: the first MAX_PROBLEMS by line are kept, whatever the batch
    size (a batch once kept the first found)."""
    lines = [line(Charge="x")] * 1500 + ["{bad"] * 1500
    path = write(tmp_path, jsonl(*lines), "usage.jsonl")
    kept = []
    for size in (10, 5000):
        invoice = Invoice(path, mapping(), "CNY", Problems())
        assert [row for batch in invoice.batches(size) for row in batch] == []
        kept.append(([str(p) for p in invoice.problems.items], invoice.problems.count))
    assert kept[0] == kept[1]
    problems, count = kept[0]
    assert count == 3000 and len(problems) == MAX_PROBLEMS
    assert problems[-1].startswith(f"{path}:{MAX_PROBLEMS}: amount: 'x'")


# --- generated files ------------------------------------------------------------------------

VALUES: list[Any] = [*GOOD, "", " ", None, 0, 60, -1, 1.5, True, [], {}, "x", "+8613900001111",
                     "2026-11-03 09:15:02.5+08:00", "2026-11-01T01:30:00", "0,12", "s\x01",
                     "\ufffd", "会话"]


@st.composite
def json_lines(draw: st.DrawFn) -> bytes:
    """A JSON-lines file of good, odd, missing and repeated values, and odd lines."""
    out = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["good", "odd", "odd", "blank", "bad", "extra"]))
        if kind == "good":
            out.append(line())
        elif kind == "odd":
            values = {key: draw(st.sampled_from([*VALUES, ...]))
                      for key in draw(st.sets(st.sampled_from(list(GOOD_LINE)), min_size=1))}
            out.append(line(**values))
        elif kind == "blank":
            out.append(draw(st.sampled_from(["", " ", "\t"])))
        elif kind == "bad":
            out.append(draw(st.sampled_from(["{", "[1]", "{bad", _L + "x", "NaN"])))
        else:
            out.append(_L[:-1] + ', "x": ' + draw(st.sampled_from(
                ["NaN", "[[[]]]", '"\\ud800"', "1e400", '{"CallSid": 1}'])) + "}")
    end = draw(st.sampled_from(["\n", "\r\n"]))
    return "".join(text + end for text in out).encode()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(content=json_lines(), zone=st.sampled_from([None, "Asia/Shanghai", "America/New_York"]))
def test_generated_files_read_the_same_both_ways(tmp_path: Path, content: bytes,
                                                 zone: str | None) -> None:
    path = write(tmp_path, content, "usage.jsonl")
    how = mapping(**({"timezone": zone} if zone else {}))
    column_wise, line_by_line = by_columns(path, how), by_lines(path, how)
    assert column_wise is not None  # every such file is read column-wise
    assert column_wise == line_by_line
