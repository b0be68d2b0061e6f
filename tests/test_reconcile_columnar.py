"""The invoice's CSV read column-wise (`columnar.arrow_batches`, stored by ADBC) against the
line-by-line reader (`Invoice.batches`): for every file the same rows, problems (in the same
order), problem count and line count, or `NotColumnar` and the line-by-line reader reads it
all (the contract in columnar.py). Crafted files of every odd value; generated ones; the
vectorized times (`epoch_ms`) and the SQL caller keys (`plain_key_sql`) against the
functions they mirror; the scratch database; an interrupt while ADBC ingests.
"""

from __future__ import annotations

import gc
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botmeter.reconcile import columnar
from botmeter.reconcile.callers import caller_key, plain_key_sql, plain_sql
from botmeter.reconcile.invoice import MAX_LINE, MAX_PROBLEMS, Invoice, InvoiceError, Problems
from botmeter.reconcile.lines import MAX_VALUE, LineError, LineReader
from botmeter.reconcile.loading import load_invoice
from botmeter.reconcile.mapping import InvoiceMapping

from .helpers import eventually_sync
from .reconcile_support import (
    PERIOD,
    invoice_line,
    reconcile_json,
    recorded_calls,
    write_mapping,
)

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = {"session_id": "CallSid", "caller_number": "From", "started_at": "StartTime",
           "seconds": "Duration", "amount": "Charge"}
HEADER = tuple(COLUMNS.values())
GOOD = ("s-1", "13900001111", "2026-11-03T09:15:02Z", "60", "0.12")
VENDOR_COLUMNS = ("id", "session_id", "caller", "ckey", "started", "t", "dur", "dur_field",
                  "dur_text", "amount", "micro")


def mapping(columns: dict[str, str] | None = None, **fmt: Any) -> InvoiceMapping:
    return InvoiceMapping.model_validate(
        {"columns": columns or COLUMNS, "format": {"country_code": "86", **fmt}})


# --- reading one file both ways -------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """What a reader made of a file: its rows (VendorLine fields), its problems as shown, how
    many there were, and how many lines it read."""

    rows: list[tuple[Any, ...]]
    problems: list[str]
    count: int
    lines_read: int


def fresh(path: Path, how: InvoiceMapping, currency: str = "CNY") -> Invoice:
    return Invoice(path, how, currency, Problems())


def read(invoice: Invoice, rows: list[tuple[Any, ...]]) -> Reading:
    return Reading(rows, [str(p) for p in invoice.problems.items], invoice.problems.count,
                   invoice.lines_read)


def by_lines(path: Path, how: InvoiceMapping, currency: str = "CNY") -> Reading | str:
    """The line-by-line reader's reading, or its InvoiceError's message."""
    invoice = fresh(path, how, currency)
    try:
        rows = [tuple(line) for batch in invoice.batches() for line in batch]
    except InvoiceError as exc:
        return str(exc)
    return read(invoice, rows)


def by_columns(path: Path, how: InvoiceMapping, currency: str = "CNY") -> Reading | str | None:
    """The columnar reader's reading (rows in line order), its InvoiceError's message, or
    None when it declines the file."""
    invoice = fresh(path, how, currency)
    try:
        rows = [tuple(row.values()) for batch in columnar.arrow_batches(invoice)
                for row in batch.to_pylist()]
    except columnar.NotColumnar:
        return None
    except InvoiceError as exc:
        return str(exc)
    return read(invoice, sorted(rows, key=lambda row: row[0]))


def same_both_ways(path: Path, how: InvoiceMapping, currency: str = "CNY"
                   ) -> tuple[bool, Reading | str]:
    """Assert the two readers agree on the file: whether the columnar one read it, and what
    the line-by-line one made of it."""
    column_wise, line_by_line = by_columns(path, how, currency), by_lines(path, how, currency)
    if column_wise is not None:
        assert column_wise == line_by_line
    return column_wise is not None, line_by_line


def read_traced(invoice: Invoice) -> tuple[int, int]:
    """The rows the columnar reader reads, and the peak of Python's memory meanwhile."""
    tracemalloc.start()
    try:
        rows = sum(batch.num_rows for batch in columnar.arrow_batches(invoice))
        return rows, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def stored(path: Path, how: InvoiceMapping, db: Path, currency: str = "CNY"
           ) -> tuple[str, Reading]:
    """`load_invoice` into a real SQLite file: which way it went, and the vendor table read
    back (each value of the SQL type a Python value of its kind gets)."""
    invoice = fresh(path, how, currency)
    db.unlink(missing_ok=True)
    way = load_invoice(invoice, db)
    kinds = {int: "integer", str: "text", type(None): "null"}
    with sqlite3.connect(db) as conn:
        columns = ", ".join(VENDOR_COLUMNS)
        typed = ", ".join(f"typeof({c})" for c in VENDOR_COLUMNS)
        rows = []
        for row in conn.execute(f"SELECT {columns}, {typed} FROM vendor ORDER BY id"):
            values, types = row[:len(VENDOR_COLUMNS)], row[len(VENDOR_COLUMNS):]
            assert [kinds[type(v)] for v in values] == list(types), values
            rows.append(values)
    conn.close()
    return way, read(invoice, rows)


def check(path: Path, how: InvoiceMapping, *, plain: bool, currency: str = "CNY") -> None:
    """Both readers agree; the file stored by `load_invoice` is what the line-by-line reader
    reads; and it went column-wise exactly when the file is `plain`."""
    took, expected = same_both_ways(path, how, currency)
    if isinstance(expected, str):
        with pytest.raises(InvoiceError, match="."):
            stored(path, how, path.with_suffix(".db"), currency)
        return
    way, reading = stored(path, how, path.with_suffix(".db"), currency)
    assert reading == expected
    assert (way, took) == (("columnar", True) if plain else ("lines", False))


def csv_bytes(*rows: tuple[str, ...], header: tuple[str, ...] = HEADER, delimiter: str = "\t",
              end: str = "\n") -> bytes:
    return "".join(delimiter.join(row) + end for row in (header, *rows)).encode()


def write(tmp_path: Path, content: bytes, name: str = "usage.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --- odd values, one column at a time -------------------------------------------------------

ODD_VALUES: dict[str, list[str]] = {
    "session_id": ["", "  s-1  ", "s\x01-1", "s-1\x7f", "会话-1", "s" * 200, "s" * 201,
                   "\ufffd", "s\u00a0-1", "~!@#$%^&*()", " ", "s\u200b1"],
    "caller_number": ["", " ", " 13900001111 ", "139\x0100001111", "１３９００００１１１１",
                      "١٣٩٠٠٠٠١١١١", "+86 139-0000-1111", "008613900001111", "+8613900001111",
                      "0139", "12", "+", "电话", "1" * 200, "1" * 201, "\ufffd13900001111",
                      "tel:+8613900001111", "139" + "\x1f" * 3],
    "seconds": ["", " ", " 60 ", "-1", "+60", "0", "1,000", "60.5", "60,5", "1.1234567",
                "1.123456", "６０", "60s", "1 000", "999999999", "1000000000", "1" * 201,
                "\x1f", "6\x1f0", "nan", ".5", "5."],
    "amount": ["0.12", "-0.12", " 0.12 ", "+0.00", "-0", "1,234.56", "1.234,56", "1 234,56",
               "0,12", "0.1234567", "0.123456", "¥0.12", "0.12 CNY", "", "1e3", "１.２",
               "000000000001", "1234567890", "1" * 201, ".5", "5.", "0.12\ufffd"],
}
ODD_TIMES: list[tuple[str, str | None]] = [
    # separators, fractions of 1 to 7 digits, offsets
    *[(t, None) for t in [
        "2026-11-03 09:15:02Z", "2026-11-03T09:15:02.1Z", "2026-11-03T09:15:02.12Z",
        "2026-11-03T09:15:02.123Z", "2026-11-03T09:15:02.1234Z", "2026-11-03T09:15:02.12345Z",
        "2026-11-03T09:15:02.123456Z", "2026-11-03T09:15:02.1234567Z", "2026-11-03T09:15:02.Z",
        "2026-11-03T09:15:02,5Z", "2026-11-03T09:15:02+08:00", "2026-11-03T09:15:02-05:30",
        "2026-11-03T09:15:02-00:00", "2026-11-03T09:15:02+23:59", "2026-11-03T09:15:02+24:00",
        "2026-11-03T09:15:02+05:30:15", "2026-11-03T09:15:02+0800", "2026-11-03T09:15:02+08",
        "2026-11-03T09:15:02z", "2026-11-03t09:15:02Z", "2026-11-03_09:15:02Z",
        "2026-11-03T09:15Z", "2026-11-03", "20261103T091502Z", " 2026-11-03T09:15:02Z ",
        "２０２６-11-03T09:15:02Z", "yesterday", ""]],
    # no offset: without a time zone, and with one
    ("2026-11-03T09:15:02", None), ("2026-11-03T09:15:02", "Asia/Shanghai"),
    ("2026-11-03 09:15:02.5", "UTC"),
    # the calendar: Feb 29, 24:00, second 60, the ends of the years Python has
    ("2024-02-29T12:00:00Z", None), ("2026-02-29T12:00:00Z", None),
    ("2000-02-29T12:00:00Z", None), ("2100-02-29T12:00:00Z", None),
    ("2026-11-03T24:00:00Z", None), ("2026-11-03T23:59:60Z", None),
    ("2026-11-31T00:00:00Z", None), ("2026-13-01T00:00:00Z", None),
    ("2026-00-01T00:00:00Z", None), ("2026-11-03T09:60:00Z", None),
    ("1970-01-01T00:00:00Z", None), ("1970-01-01T00:00:00", "Europe/London"),
    ("1971-01-01T00:00:00", "America/New_York"), ("0001-01-01T00:00:00Z", None),
    ("0001-01-01T00:00:00+14:00", None), ("9999-12-31T23:59:59.999Z", None),
    ("9999-12-31T23:59:59-12:00", None), ("2999-12-31T23:59:59", "Asia/Shanghai"),
    ("3000-01-01T00:00:00", "Asia/Shanghai"),
    # no time Python has, with a time zone for it
    ("0000-01-01T00:00:00", "Europe/London"), ("9999-12-31T23:59:60", "Europe/London"),
    ("9999-12-32T00:00:00", "America/New_York"), ("0001-01-01T00:00:00", "Asia/Shanghai"),
    ("9999-12-31T23:59:59", "Pacific/Kiritimati"),
    # clocks that change: skipped and repeated wall times
    ("2026-03-08T02:30:00", "America/New_York"), ("2026-03-08T01:59:59.999", "America/New_York"),
    ("2026-03-08T03:00:00", "America/New_York"), ("2026-11-01T01:30:00", "America/New_York"),
    ("2026-11-01T02:00:00", "America/New_York"), ("2026-03-29T01:30:00", "Europe/London"),
    ("2026-10-25T01:30:00", "Europe/London"), ("2026-10-25T00:59:59", "Europe/London"),
    ("2026-10-04T02:15:00", "Australia/Lord_Howe"), ("2026-10-04T02:30:00", "Australia/Lord_Howe"),
    ("2026-04-05T01:45:00", "Australia/Lord_Howe"), ("2026-04-05T02:00:00", "Australia/Lord_Howe"),
    ("1972-01-07T00:00:00", "Africa/Monrovia"), ("2011-12-30T00:30:00", "Pacific/Apia"),
]


@pytest.mark.parametrize(("column", "value"), [
    pytest.param(column, value, id=f"{column}-{value[:24]!r}")
    for column, values in ODD_VALUES.items() for value in values])
def test_an_odd_value_between_good_lines(tmp_path: Path, column: str, value: str) -> None:
    """Each odd value in a file the columnar reader takes: its line read as the line-by-line
    reader reads it, the lines around it numbered as before."""
    at = list(COLUMNS).index(column)
    odd = tuple(value if i == at else v for i, v in enumerate(GOOD))
    for fmt in ({}, {"decimal_comma": True}):
        path = write(tmp_path, csv_bytes(GOOD, odd, GOOD, odd))
        check(path, mapping(**fmt), plain=True)


@pytest.mark.parametrize(("started", "zone"), [
    pytest.param(t, z, id=f"{t!r}-{z}") for t, z in ODD_TIMES])
def test_an_odd_time_between_good_lines(tmp_path: Path, started: str, zone: str | None) -> None:
    odd = (GOOD[0], GOOD[1], started, *GOOD[3:])
    path = write(tmp_path, csv_bytes(GOOD, odd, GOOD))
    check(path, mapping(**({"timezone": zone} if zone else {})), plain=True)


CURRENCY_COLUMNS = {**COLUMNS, "currency": "Currency"}


@pytest.mark.parametrize("currency", ["CNY", "cny", " CNY ", "USD", "", "C\x01NY", "人民币",
                                      "\ufffd", "X" * 201])
@pytest.mark.parametrize("default", [None, "CNY", "USD"])
def test_a_currency_column(tmp_path: Path, currency: str, default: str | None) -> None:
    content = csv_bytes((*GOOD, "CNY"), (*GOOD, currency), header=(*HEADER, "Currency"))
    fmt = {"currency": default} if default else {}
    check(write(tmp_path, content), mapping(CURRENCY_COLUMNS, **fmt), plain=True)


@pytest.mark.parametrize("default", ["CNY", "USD"])
def test_the_mappings_currency_without_a_column(tmp_path: Path, default: str) -> None:
    """[format] currency and no currency column (or none in the header): each line is in
    that currency; another than the plan's is each line's problem."""
    for columns in (COLUMNS, CURRENCY_COLUMNS):
        path = write(tmp_path, csv_bytes(GOOD, GOOD))
        check(path, mapping(columns, currency=default), plain=True)
        lines = by_lines(path, mapping(columns, currency=default))
        assert isinstance(lines, Reading)
        assert len(lines.rows) == (2 if default == "CNY" else 0)


# --- the file itself ------------------------------------------------------------------------

_H, _G = ",".join(HEADER), ",".join(GOOD)
_ODD_LINE = ",".join((GOOD[0], GOOD[1], "yesterday", *GOOD[3:]))
FILES: dict[str, tuple[bytes, bool]] = {
    # name: (content, whether the columnar reader takes it)
    "comma": (f"{_H}\n{_G}\n{_ODD_LINE}\n{_G}\n".encode(), True),
    "tab": (csv_bytes(GOOD, GOOD), True),
    "semicolon": (f"{_H}\n{_G}\n{_G}\n".replace(",", ";").encode(), True),
    "crlf": (f"{_H}\r\n{_G}\r\n{_ODD_LINE}\r\n{_G}\r\n".encode(), True),
    "crlf and lf mixed": (f"{_H}\r\n{_G}\n{_G}\r\n{_ODD_LINE}\n".encode(), True),
    "no end of line at the end": (f"{_H}\n{_G}\n{_G}".encode(), True),
    "bom at the start": (f"\ufeff{_H}\n{_G}\n".encode(), True),
    "blank lines": (f"{_H}\n\n{_G}\n\n\n{_ODD_LINE}\n\n".encode(), True),
    "blank crlf lines": (f"{_H}\r\n\r\n{_G}\r\n\r\n".encode(), True),
    "rows of empty fields": (f"{_H}\n,,,,\n{_G}\n,,,,\n".encode(), True),
    "rows of spaces": (f"{_H}\n , ,\t, ,\u3000\n{_G}\n\x1c,\x1d,\x1e,\x1f,\x0b\n".encode(), True),
    "a row with text outside the mapped columns": (
        f"Note,{_H}\nTotal: 0.12,,,,,\n,{_G}\n".encode(), True),
    "control characters": (f"{_H}\n{_G}\x0b\x0c\x85\u2028\n{_G}\n".encode(), True),
    "u+fffd written in the file": (f"{_H}\n{_G}\n\ufffd{_G}\n{_G}\n".encode(), True),
    "u+fffd only in the header": (f"{_H},\ufffd\n{_G},\n".encode(), True),
    "a header name not utf-8": (f"{_H},x".encode() + b"\xff\n" + f"{_G},\n".encode(), True),
    "an unmapped header name twice": (f"{_H},X,X\n{_G},,\n".encode(), True),
    "a header with a delimiter at the end": (f"{_H},\n{_G},\n".encode(), True),
    "padded header names": (f" CallSid , From ,StartTime,Duration , Charge\n{_G}\n".encode(),
                            True),
    "backslashes": (f"{_H}\n{_G}\\\n\\{_G}\n".encode(), True),
    "a header alone": (f"{_H}\n".encode(), True),
    "a header alone, no end of line": (_H.encode(), False),
    "cjk everywhere": (f"{_H}\n会话,电话,时间,六十,零点一二\n{_G}\n".encode(), True),
    "a mapped header name twice": (f"{_H},From\n{_G},1\n".encode(), True),
    "a required column missing": (b"CallSid,From,Duration,Charge\ns,1,60,0.12\n", True),
    "the session column missing": (
        f"From,StartTime,Duration,Charge\n{','.join(GOOD[1:])}\n".encode(), True),
    # declined: read line by line
    "quotes": (f'{_H}\n{_G}\n"s-2",{",".join(GOOD[1:])}\n'.encode(), False),
    "a quoted delimiter": (f'{_H}\n{_G}\n{",".join(GOOD[:4])},"0,12"\n'.encode(), False),
    "an unclosed quote": (f'{_H}\n"{_G}\n{_G}\n'.encode(), False),
    "nul": (f"{_H}\n{_G}\n{_G}\x00\n{_G}\n".encode(), False),
    "a lone cr": (f"{_H}\n{_G}\r{_G}\n{_G}\n".encode(), False),
    "cr line ends": (f"{_H}\r{_G}\r{_G}\r".encode(), False),
    "a bom inside": (f"{_H}\n{_G}\n\ufeff{_G}\n".encode(), False),
    "a bom inside a field": (f"{_H}\n{_G}\ufeff\n".encode(), False),
    "two boms at the start": (f"\ufeff\ufeff{_H}\n{_G}\n".encode(), False),
    "the header not on line 1": (f"\n\n{_H}\n{_G}\n".encode(), False),
    "a row too short": (f"{_H}\n{_G}\ns,1\n{_G}\n".encode(), False),
    "a row too long": (f"{_H}\n{_G}\n{_G},extra\n{_G}\n".encode(), False),
    "a line of spaces": (f"{_H}\n{_G}\n   \n{_G}\n".encode(), False),
    "not utf-8 in a line": (f"{_H}\n{_G}\n".encode() + b"s,139\xff,x,60,0.12\n", False),
    "an encoded surrogate": (f"{_H}\n".encode() + b"s,139\xed\xa0\x80,x,60,0.12\n", False),
    "a line near 64 kib": (f"{_H}\n{_G}\n{_G}{'x' * 65_490}\n{_G}\n".encode(), False),
    "a line over 64 kib": (f"{_H}\n{_G}\n{_G}{'x' * 70_000}\n{_G}\n".encode(), False),
    "json lines": (b'{"From": "139", "StartTime": "2026-11-03T09:15:02Z"}\n', True),
}


@pytest.mark.parametrize("name", list(FILES))
def test_a_file_of_its_kind(tmp_path: Path, name: str) -> None:
    content, plain = FILES[name]
    check(write(tmp_path, content), mapping(timezone="Asia/Shanghai"), plain=plain)


@pytest.mark.parametrize("columns", [
    {**COLUMNS, "minutes": "Minutes"},
    {k: v for k, v in COLUMNS.items() if k != "seconds"} | {"minutes": "Minutes"}])
@pytest.mark.parametrize("header", [HEADER, (*HEADER, "Minutes"), (*HEADER[:3], "Minutes",
                                                                  HEADER[4])])
def test_seconds_and_minutes_columns_there_or_not(tmp_path: Path, columns: dict[str, str],
                                                  header: tuple[str, ...]) -> None:
    rows = [(*GOOD, "1.5")[:len(header)], ("", *GOOD[1:3], "", "0.12", "2")[:len(header)],
            (*GOOD[:3], " ", "0.12", " ")[:len(header)]]
    content = csv_bytes(*rows, header=header)
    check(write(tmp_path, content), mapping(columns), plain=True)


def test_a_file_that_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "usage.csv"
    os.mkfifo(fifo)
    assert by_columns(fifo, mapping()) is None  # never opened: nothing to write to it


def test_times_read_with_a_time_format_are_read_line_by_line(tmp_path: Path) -> None:
    path = write(tmp_path, csv_bytes(GOOD, (*GOOD[:2], "03/11/2026 09:15", *GOOD[3:])))
    check(path, mapping(time_format="%d/%m/%Y %H:%M"), plain=False)


def test_an_invoice_that_cannot_be_read(tmp_path: Path) -> None:
    """No permission to read the invoice (its name and size can be seen; `reconcile` checks
    it first, but it may change, and other callers do not): the line-by-line reader's
    InvoiceError, not the columnar reader's OSError (that was a crash)."""
    invoice = write(tmp_path, csv_bytes(GOOD))
    invoice.chmod(0)
    script = f"""
from pathlib import Path
from botmeter.reconcile.invoice import Invoice, InvoiceError, Problems
from botmeter.reconcile.loading import load_invoice
from botmeter.reconcile.mapping import InvoiceMapping
how = InvoiceMapping.model_validate({{"columns": {COLUMNS!r}}})
try:
    load_invoice(Invoice(Path({str(invoice)!r}), how, "CNY", Problems()),
                 Path({str(tmp_path / "invoice.db")!r}))
except InvoiceError as exc:
    print(exc)
"""
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:  # root reads it anyway; in a user namespace of its own, it cannot
        if shutil.which("unshare") is None:
            pytest.skip("root, and no unshare(1) to drop the privilege")
        command = ["unshare", "--user", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "agent")})
    assert done.stdout == f"{invoice}: cannot read: Permission denied\n", done.stderr


@pytest.mark.parametrize("end", ["\r\n", "\r"])
@pytest.mark.parametrize("over", [-1, 0, 1, 2, MAX_LINE, MAX_LINE + 1])
def test_a_line_about_as_long_as_the_limit(tmp_path: Path, end: str, over: int) -> None:
    """A line whose end makes it `over` characters longer than MAX_LINE, then lines that are
    numbered on: a CR LF cut in two by the limit (a line of 65,535 or 131,071 characters and
    CR LF) was read as the line and a blank one, and every later line was numbered one too
    many."""
    long = _G + "x" * (MAX_LINE + over - len(end) - len(_G))
    bad = _G.replace("0.12", "bad")
    path = write(tmp_path, end.join([_H, _G, long, _G, bad, _G, ""]).encode())
    lines = by_lines(path, mapping())
    assert isinstance(lines, Reading)
    assert [row[0] for row in lines.rows] == [2, 4, 6]
    too_long = f"longer than {MAX_LINE} characters" if over > 0 else \
        f"amount: longer than {MAX_VALUE} characters"
    assert [p.split(":", 2)[1:] for p in lines.problems] == [
        ["3", f" {too_long}"],
        ["5", " amount: 'bad' is not a decimal number (a point for decimals, no currency sign)"]]
    check(path, mapping(), plain=False)


# --- many lines: batches, their boundaries, the problems kept -------------------------------


def test_problems_across_batches_come_in_line_order(tmp_path: Path) -> None:
    """Over 1 MiB (several Arrow batches) and over 5,000 lines (several line-by-line
    batches), bad lines of both kinds (found as a line is split, found as its values are
    read) scattered: the same problems in line order both ways, those kept (the first
    MAX_PROBLEMS) the same."""
    rows = []
    for i in range(40_000):
        row = (f"s-{i}", f"139{i:08d}", f"2026-11-{1 + i % 28:02d}T09:{i % 60:02d}:02Z",
               str(i % 300), f"0.{i % 100:02d}")
        if i % 53 == 7:
            row = (*row[:4], "x")  # a value not read
        elif i % 61 == 3:
            row = ("\ufffd", *row[1:])  # a line not utf-8
        elif i % 97 == 5:
            row = ("s\ufffd", *row[1:3], row[3], "x")  # both
        elif i % 499 == 11:
            row = ("s" * 300, *row[1:])  # too long
        rows.append(row)
    path = write(tmp_path, csv_bytes(*rows))
    assert path.stat().st_size > columnar.BLOCK
    lines = by_lines(path, mapping())
    assert isinstance(lines, Reading) and lines.count > MAX_PROBLEMS
    numbers = [int(p.split(":")[1]) for p in lines.problems]
    assert numbers == sorted(numbers)
    check(path, mapping(), plain=True)


def test_a_file_declined_half_way(tmp_path: Path) -> None:
    """Several batches read column-wise (problems among them), then a line of another width
    near the end: the columnar reader gives up, and what it read is forgotten (no problem
    twice, no line counted twice)."""
    rows = [(*GOOD[:4], "x" if i % 1000 == 0 else GOOD[4]) for i in range(60_000)]
    content = csv_bytes(*rows, delimiter=",") + f"{_G},extra\n{_G}\n".encode()
    path = write(tmp_path, content)
    assert path.stat().st_size > 2 * columnar.BLOCK
    invoice = fresh(path, mapping())
    batches = columnar.arrow_batches(invoice)
    next(batches), next(batches)
    assert invoice.problems.count > 0  # found column-wise, before it gives up
    with pytest.raises(columnar.NotColumnar):
        list(batches)
    check(path, mapping(), plain=False)


# --- generated files ------------------------------------------------------------------------

PLAIN = {"session_id": ["s-1", "sess-0003", ""], "caller_number": ["13900001111",
         "+8613900001111", "008613900001111"], "started_at": ["2026-11-03T09:15:02Z",
         "2026-11-03 09:15:02.5+08:00", "2026-11-01T01:30:00"], "seconds": ["60", "0", "61.5"],
         "minutes": ["1", "1.5", ""], "amount": ["0.12", "1.5", "0"],
         "currency": ["CNY", "", "cny"]}
ODD = {**ODD_VALUES, "started_at": [t for t, _ in ODD_TIMES], "minutes": ODD_VALUES["seconds"],
       "currency": ["USD", " CNY ", "\ufffd", "X" * 201]}
ZONES = [None, "Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe"]


@st.composite
def invoices(draw: st.DrawFn) -> tuple[bytes, InvoiceMapping, bool]:
    """A usage detail file made of plain and odd values, some odd lines (blank, empty fields,
    ragged, quoted, NUL, a lone CR, a BOM), the mapping it is read with, and whether the
    columnar reader must take it."""
    fields = [*CURRENCY_COLUMNS, "minutes"]  # the header names them as the fields
    present = [f for f in fields if f in ("caller_number", "started_at", "amount")
               or draw(st.booleans())]
    if "seconds" not in present and "minutes" not in present:
        present.append("seconds")
    header = draw(st.permutations([*present, *draw(st.sampled_from([[], ["Note"]]))]))
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    plain = True
    lines = [delimiter.join(header)]
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["values"] * 6 + ["blank", "empty", "ragged", "quoted",
                                                      "nul", "cr", "bom"]))
        values = [draw(st.sampled_from(PLAIN[f] if draw(st.integers(0, 3)) else ODD[f]))
                  if f in PLAIN else draw(st.sampled_from(["", "note", "\ufffd"]))
                  for f in header]
        line = delimiter.join(v.replace(delimiter, "") for v in values)
        if kind == "blank":
            line = ""
        elif kind == "empty":
            line = delimiter * (len(header) - 1)
        elif kind == "ragged":
            line, plain = line + delimiter, False
        elif kind == "quoted":
            line, plain = '"' + line.replace(delimiter, '"' + delimiter + '"', 1), False
        elif kind == "nul":
            line, plain = line + "\x00", False
        elif kind == "cr":
            line, plain = line + "\r" + line, False
        elif kind == "bom":
            line, plain = "\ufeff" + line, False
        lines.append(line)
    text = end.join(lines) + draw(st.sampled_from([end, ""]))
    if text == lines[0]:
        plain = False  # a header without an end of line: Arrow reads no header
    zone = draw(st.sampled_from(ZONES))
    fmt: dict[str, Any] = {"timezone": zone} if zone else {}
    if draw(st.booleans()):
        fmt["decimal_comma"] = True
    if draw(st.booleans()):
        fmt["currency"] = draw(st.sampled_from(["CNY", "USD"]))
    if (code := draw(st.sampled_from([None, "86", "1", "44"]))) is not None:
        fmt["country_code"] = code
    how = InvoiceMapping.model_validate({"columns": {f: f for f in fields}, "format": fmt})
    return ((draw(st.sampled_from(["", "\ufeff"])) + text).encode(), how, plain)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(invoices())
def test_generated_files_are_read_alike(tmp_path: Path,
                                        invoice: tuple[bytes, InvoiceMapping, bool]) -> None:
    content, how, plain = invoice
    path = write(tmp_path, content)
    took, _ = same_both_ways(path, how)
    assert took or not plain


# --- times and caller keys ------------------------------------------------------------------


@st.composite
def iso_times(draw: st.DrawFn) -> str:
    """Times in ISO 8601, or almost: any number in each place, the separators and offsets
    vendors write and some they should not."""
    number = st.integers
    year = draw(st.one_of(number(1969, 2100), number(0, 9999)))
    parts = [draw(number(0, 13)), draw(number(0, 32)), draw(number(0, 24)), draw(number(0, 60)),
             draw(number(0, 61))]
    month, day, hour, minute, second = parts
    fraction = draw(st.sampled_from(["", "", "."]) | st.from_regex(r"\.[0-9]{1,7}",
                                                                   fullmatch=True))
    offset = draw(st.sampled_from(["", "", "Z", "z", "+00:00", "-00:00", "+05:30:15", "+0800"])
                  | st.builds(lambda s, h, m: f"{s}{h:02d}:{m:02d}", st.sampled_from("+-"),
                              number(0, 25), number(0, 60)))
    sep = draw(st.sampled_from(["T", "T", " ", "t", "_"]))
    return (f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}"
            f"{fraction}{offset}")


@st.composite
def wall_times_near_a_change(draw: st.DrawFn) -> str:
    """Wall-clock times a few hours around a time zone's clock changes (gaps, overlaps)."""
    month = draw(st.sampled_from([3, 4, 9, 10, 11]))
    day = draw(st.integers(1, 31 if month != 4 and month != 9 and month != 11 else 30))
    return (f"{draw(st.integers(1971, 2040))}-{month:02d}-{day:02d}T"
            f"{draw(st.integers(0, 4)):02d}:{draw(st.integers(0, 59)):02d}:"
            f"{draw(st.sampled_from([0, 30, 59])):02d}{draw(st.sampled_from(['', '.999']))}")


TIME_ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Shanghai",
              "Pacific/Chatham", "Antarctica/Troll", "America/St_Johns", "Africa/Monrovia",
              "Pacific/Apia", "Asia/Kathmandu", "Europe/Dublin", "UTC"]


@settings(max_examples=200)
@given(st.lists(iso_times() | wall_times_near_a_change(), min_size=1, max_size=40),
       st.sampled_from([None, *TIME_ZONES]))
def test_epoch_ms_is_what_the_line_reader_reads(texts: list[str], zone: str | None) -> None:
    """Each time `epoch_ms` reads is the instant `LineReader.moment` reads; what it does not
    read goes to the LineReader (no claim); and a plain time it can read, it does."""
    how = mapping(**({"timezone": zone} if zone else {}))
    reader = LineReader(how, "CNY")
    ms, ok = columnar.epoch_ms(pa.array(texts, pa.string()), how.zone)
    for text, got, took in zip(texts, ms.to_pylist(), ok.to_pylist(), strict=True):
        try:
            want: int | None = reader.moment(text)[0]
        except LineError:
            want = None
        if took:
            assert got == want, text
        elif want is not None and _common(text):
            # the plain form, a valid date in 1971-2999 with an offset: read column-wise
            raise AssertionError(f"{text!r} not read column-wise")
    # only times Python reads: all read at once by Arrow's cast, not one by one by Python
    readable = [text for text in texts if _moment(reader, text) is not None]
    ms, ok = columnar.epoch_ms(pa.array(readable, pa.string()), how.zone)
    for text, got, took in zip(readable, ms.to_pylist(), ok.to_pylist(), strict=True):
        assert got == _moment(reader, text) if took else not _common(text), text


def _moment(reader: LineReader, text: str) -> int | None:
    try:
        return reader.moment(text)[0]
    except LineError:
        return None


_WITH_OFFSET = re.compile(r"([0-9]{4})-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}"
                          r"(\.[0-9]{1,3})?(Z|[+-]([0-9]{2}):([0-9]{2}))")


def _common(text: str) -> bool:
    """The plain form with an offset (Python also reads `+00:60` as an hour: not plain), in
    the years read column-wise."""
    match = _WITH_OFFSET.fullmatch(text)
    return (match is not None and 1971 <= int(match.group(1)) <= 2999
            and (match.group(3) == "Z" or int(match.group(5)) <= 59))


@settings(max_examples=300)
@given(st.text(st.sampled_from("0123456789+ -()\x00١１#*a"), max_size=20)
       | st.from_regex(r"\+?(00)?(86|1|44|880)?0?[0-9]{0,12}", fullmatch=True),
       st.sampled_from([None, "1", "7", "86", "44", "880", "1868"]))
def test_the_sql_key_of_plain_callers_is_caller_key(number: str, country_code: str | None
                                                   ) -> None:
    """In a real SQLite: `plain_sql` says plain for ASCII digits, the first not 0, and nothing
    else (a NUL included), and `plain_key_sql` gives those the key `caller_key` gives."""
    with sqlite3.connect(":memory:") as conn:
        plain, key = conn.execute(
            f"SELECT {plain_sql('x')}, {plain_key_sql('x')} FROM (SELECT ? AS x)",
            (number,)).fetchone()
    conn.close()
    assert bool(plain) == (number.isascii() and number.isdigit() and number[0] != "0"), number
    if plain:
        assert key == caller_key(number, country_code), number


# --- memory ---------------------------------------------------------------------------------


def _cached_texts(reader: LineReader) -> list[str]:
    """Every text the LineReader's caches hold (the caches' dicts are theirs to traverse)."""
    found: list[str] = []
    for cached in (reader.decimal, reader.duration, reader.caller):
        for table in gc.get_referents(cached):
            if isinstance(table, dict):
                for key in table:
                    keys = key if isinstance(key, tuple) else (key,)
                    found.extend(k for k in keys if isinstance(k, str))
    return found


def test_no_cache_keeps_a_long_value_and_memory_stays_bounded(tmp_path: Path) -> None:
    """Values up to 60,000 characters in each column, then short lines by the hundred
    thousand (a batch of Arrow's holds 200,000 of them): read column-wise, no cache holds a
    text over MAX_VALUE characters, and Python's memory stays as small as line by line (a
    whole batch's lines as Python objects at once took 13 MB here, 63 MB for bad ones)."""
    path = tmp_path / "usage.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write("\t".join(HEADER) + "\n")
        for i in range(100):
            huge = f"{i:05d}" + "1" * (201 + i * 600)
            for at in range(5):
                out.write("\t".join(huge if j == at else v for j, v in enumerate(GOOD)) + "\n")
        out.write("\t\t\t\t\n" * 250_000 + "\t\t\tx\t\n" * 20_000)  # 200,000 lines a batch
        out.write("\t".join(GOOD) + "\n")
    invoice = fresh(path, mapping())
    rows, peak = read_traced(invoice)
    assert rows == 1 and invoice.problems.count == 500 + 20_000
    assert max(map(len, _cached_texts(invoice.reader)), default=0) <= MAX_VALUE
    assert _cached_texts(invoice.reader)  # (the caches were found)
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


def test_the_reconciliation_is_the_same_either_way(write_config: Any, tmp_path: Path) -> None:
    """A hand-made invoice over the recorded calls, with odd and bad lines: `botmeter
    reconcile`'s whole output is the same read column-wise as line by line (a BOM on a blank
    last line, which is no line, makes the columnar reader decline the file)."""
    config, calls = recorded_calls(write_config)
    answered = [c for c in calls if c["bot_answered_at"]]
    lines = [invoice_line(c) for c in answered]
    lines += [invoice_line(answered[0]),  # repeated
              invoice_line(answered[1], seconds=999), invoice_line(answered[2], amount="9.99"),
              invoice_line(answered[3], caller="+86 " + answered[3]["caller_number"]),
              invoice_line(answered[0], start="yesterday"), invoice_line(answered[0], amount="x"),
              invoice_line(answered[1], start="2026-10-01T00:00:00Z"),
              invoice_line(answered[1], session="s-\ufffd"),
              invoice_line(answered[2], start=answered[2]["bot_answered_at"].replace("T", " ")),
              ("", "13900000000", "2026-11-15T10:00:00+08:00", "60", "0.12")]
    invoice = tmp_path / "usage.csv"
    text = "".join(",".join(row) + "\n" for row in [HEADER, *lines])
    outputs = {}
    for ending in ("", "\ufeff\n"):
        invoice.write_text(text + ending, encoding="utf-8")
        assert (by_columns(invoice, mapping()) is None) == bool(ending)
        outputs[ending] = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert outputs[""] == outputs["\ufeff\n"]
    assert outputs[""]["problem_count"] >= 4


# --- the command: interrupted while ADBC ingests, out of disk -------------------------------


def big_invoice(write_config: Any, tmp_path: Path, lines: int) -> tuple[Path, Path]:
    """The config of the lab's recorded calls, and an invoice of `lines` copies of a call's
    line."""
    config, calls = recorded_calls(write_config)
    call = next(c for c in calls if c["bot_answered_at"])
    invoice = tmp_path / "usage.csv"
    with invoice.open("w", encoding="utf-8") as out:
        out.write(",".join(HEADER) + "\n" + (",".join(invoice_line(call)) + "\n") * lines)
    return config, invoice


def reconcile(config: Path, invoice: Path, scratch: Path, **popen: Any) -> subprocess.Popen[str]:
    """`botmeter reconcile` (--out result.json beside the invoice), its temporary files in
    `scratch`."""
    scratch.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "botmeter.cli", "--config", str(config), "reconcile",
         "--period", PERIOD, "--invoice", str(invoice), "--mapping",
         str(write_mapping(invoice.parent / "map.toml")), "--format", "json",
         "--out", str(invoice.parent / "result.json")],
        env={**os.environ, "PYTHONPATH": str(ROOT / "agent"), "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_while_the_invoice_is_ingested(write_config: Any, tmp_path: Path,
                                                  signum: int) -> None:
    """Ctrl-C or SIGTERM while ADBC stores a large CSV (its scratch database begun, the CSV
    still open): no scratch folder, no output, `interrupted`."""
    config, invoice = big_invoice(write_config, tmp_path, 1_000_000)
    scratch = tmp_path / "scratch"
    command = reconcile(config, invoice, scratch)
    try:
        eventually_sync(lambda: _ingesting(command.pid, scratch, invoice), timeout=60,
                        interval=0.002)
        command.send_signal(signum)
        _, err = command.communicate(timeout=60)
    finally:
        command.kill()
    assert command.returncode == 1, err
    assert err.endswith("botmeter: aborted: interrupted\n") and "Traceback" not in err
    assert list(scratch.iterdir()) == []
    assert list(tmp_path.glob("*result.json*")) == []


def _ingesting(pid: int, scratch: Path, invoice: Path) -> bool:
    """Whether ADBC is storing the invoice: its database begun, the CSV still being read."""
    try:
        begun = any(db.stat().st_size > 0 for db in scratch.glob("*/invoice.db"))
        open_files = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:  # a file gone as it was looked at
        return False
    return begun and str(invoice) in open_files


def test_a_full_disk_under_the_scratch_folder(write_config: Any, tmp_path: Path) -> None:
    """The scratch database cannot grow (a file size limit: a full disk): the scratch folder
    named, and what to do, the same whichever way the invoice is read (ADBC said only "cannot
    rollback - no transaction is active", as an internal error)."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    config, invoice = big_invoice(write_config, tmp_path, 100_000)
    quoted = tmp_path / "quoted" / "usage.csv"  # read line by line
    quoted.parent.mkdir()
    quoted.write_text(invoice.read_text(encoding="utf-8") + f'"s-2",{_G}\n', encoding="utf-8")
    said = []
    for source in (invoice, quoted):
        command = reconcile(config, source, tmp_path / "scratch", preexec_fn=limited)
        _, err = command.communicate(timeout=120)
        assert command.returncode == 1 and err.startswith(
            f"botmeter: reconcile error: {tmp_path / 'scratch'}/botmeter-reconcile-"), err
        assert "cannot write the scratch databases" in err and "TMPDIR" in err, err
        assert list((tmp_path / "scratch").iterdir()) == []
        said.append(re.sub(r"botmeter-reconcile-\w+", "botmeter-reconcile-*", err))
    assert said[0] == said[1]


def test_a_file_changed_while_it_is_read_column_wise_is_read_again_line_by_line(tmp_path):
    """The bytes checked first may not be the bytes Arrow reads: a file that changed in
    between (a quote appended, say) is declined at its end, and read again line by line."""
    how = mapping()
    path = write(tmp_path, csv_bytes(*[GOOD] * 3))
    invoice = fresh(path, how)
    batches = columnar.arrow_batches(invoice)
    assert next(batches).num_rows == 3
    with path.open("ab") as out:
        out.write(b's-2\t"13900001111"\t2026-11-03T09:15:02Z\t60\t0.12\n')
    with pytest.raises(columnar.NotColumnar, match="changed"):
        next(batches)
    way, reading = stored(path, how, tmp_path / "vendor.db")
    assert way == "lines" and [row[0] for row in reading.rows] == [2, 3, 4, 5]
