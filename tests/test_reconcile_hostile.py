"""`botmeter reconcile` attacked from outside: a vendor's messy or malicious export and a
confused operator. Every input here once crashed, lied, lost a line quietly, overwrote a file
or grew memory with the file; or it is a decision docs/reconcile.md states.

The calls are the lab capture replayed and rated under the per-minute plan (reconcile_support);
the invoices are written here byte by byte.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from botmeter.reconcile.callers import caller_key

from .helpers import eventually_sync
from .reconcile_support import (
    HEADER,
    MAPPING,
    PERIOD,
    cli,
    invoice_line,
    per_minute_billed,
    reconcile_json,
    recorded_calls,
    write_invoice,
    write_mapping,
)

ROOT = Path(__file__).resolve().parent.parent
CSV_HEAD = ",".join(HEADER) + "\n"


@pytest.fixture
def lab(write_config):  # type: ignore[no-untyped-def]
    """The config, and the calls the bot answered (in answer order)."""
    config, calls = recorded_calls(write_config)
    return config, [c for c in calls if c["bot_answered_at"]]


def run(config: Path, invoice: Path, mapping: Path, *args: str) -> Result:
    return cli(config, "reconcile", "--period", PERIOD, "--invoice", str(invoice),
               "--mapping", str(mapping), *args)


def csv_text(*lines: tuple[str, ...]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(lines)
    return out.getvalue()


def json_line(line: tuple[str, ...], **override: Any) -> str:
    return json.dumps({**dict(zip(HEADER, line, strict=True)), **override})


def problems_by_line(result: dict[str, Any]) -> dict[int | None, str]:
    return {p["line"]: p["message"] for p in result["problems"]}


def classes(result: dict[str, Any]) -> dict[str, int]:
    return {name: c["lines"] for name, c in result["classes"].items()}


def matched(result: dict[str, Any]) -> dict[int, str]:
    """Vendor line -> the call it matched."""
    return {line["vendor"]["line"]: line["call_id"] for line in result["lines"]
            if line["vendor"] and line["call_id"]}


# --- the file itself ------------------------------------------------------------------------


def test_crlf_quoted_newlines_and_commas_and_padded_header_names(lab, tmp_path):
    config, calls = lab
    first, second = calls[0], calls[2]
    text = (" CallSid , From ,StartTime,Duration , Charge\r\n"
            + '"a,\r\nb",' + ",".join(invoice_line(first)[1:]) + "\r\n"
            + ",".join(invoice_line(second)) + "\r\n")
    invoice = tmp_path / "usage.csv"
    invoice.write_bytes(text.encode())
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    # the quoted field spans lines 2-3: the next line is line 4, and the newline in the
    # session id is shown as a space
    assert matched(result) == {2: first["call_id"], 4: second["call_id"]}
    assert result["lines"][0]["vendor"]["session_id"] == "a,  b"
    assert result["problems"] == [] and result["vendor_lines"] == 2


def test_a_header_alone_bills_nothing(lab, tmp_path):
    config, calls = lab
    invoice = tmp_path / "usage.csv"
    invoice.write_text(CSV_HEAD.strip(), encoding="utf-8")
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert classes(result)["botmeter_only"] == len(calls)
    assert result["vendor_lines"] == 0 and result["disputed_amount"] == "0.00"


def test_a_mapped_column_named_twice_in_the_header_is_refused(lab, tmp_path):
    """Which of two `From` columns is the caller? botmeter does not guess; a repeated column
    the mapping does not use is no matter."""
    config, calls = lab
    mapping = write_mapping(tmp_path / "map.toml")
    line = invoice_line(calls[0])
    twice = tmp_path / "twice.csv"
    twice.write_text("CallSid,From,StartTime,From,Duration,Charge\n"
                     + csv_text((*line[:3], "+15550100", *line[3:])), encoding="utf-8")
    done = run(config, twice, mapping)
    assert done.exit_code == 2, done.output
    assert (f"{twice}:1: the header has 'From' twice (columns 2 and 4): which is the "
            "mapping's caller_number?") in done.stderr
    unused = tmp_path / "unused.csv"
    unused.write_text("Note,CallSid,From,StartTime,Duration,Charge,Note\n"
                      + csv_text(("x", *line, "y")), encoding="utf-8")
    assert classes(reconcile_json(config, unused, mapping))["match"] == 1


def test_a_bom_at_the_start_of_any_line_is_not_data(lab, tmp_path):
    """Two exports joined with `cat`: the second one's BOM lands mid-file, on a line's first
    field; it is not part of the session id (it made every such line a repeat)."""
    config, calls = lab
    invoice = tmp_path / "usage.csv"
    invoice.write_text("\ufeff\ufeff" + CSV_HEAD + csv_text(invoice_line(calls[0]))
                       + "\ufeff" + csv_text(invoice_line(calls[1]))
                       + "\ufeff" + csv_text(invoice_line(calls[2])), encoding="utf-8")
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert result["problems"] == []
    assert matched(result) == {2: calls[0]["call_id"], 3: calls[1]["call_id"],
                               4: calls[2]["call_id"]}
    assert all(line["vendor"]["session_id"] is None for line in result["lines"]
               if line["vendor"])


@pytest.mark.parametrize(("name", "content"), [
    ("utf16.csv", (CSV_HEAD + "x,13900010001,2026-11-26T15:25:36Z,60,0.12\n").encode("utf-16")),
    ("utf16.jsonl", '{"From": "13900010001"}\n'.encode("utf-16")),
    ("gbk.csv", "会话,主叫,开始,时长,费用\n".encode("gbk")),
    ("random.bin", bytes(range(256)) * 40),
])
def test_text_that_is_not_utf8_is_refused_saying_so(lab, tmp_path, name, content):
    config, _ = lab
    invoice = tmp_path / name
    invoice.write_bytes(content)
    done = run(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith(f"botmeter: invoice error: {invoice}:1: not UTF-8 text")
    assert "save the usage detail as UTF-8" in done.stderr
    assert "\x00" not in done.stderr and "\ufffd" not in done.stderr


def test_the_calls_database_given_as_the_invoice(lab, tmp_path):
    config, _ = lab
    done = run(config, config.parent / "calls.db", write_mapping(tmp_path / "map.toml"))
    assert done.exit_code == 2 and "not UTF-8 text" in done.stderr
    assert "SQLite format" not in done.stderr


def test_nul_bytes_and_binary_junk_in_lines_are_problems_of_those_lines(lab, tmp_path):
    config, calls = lab
    invoice = tmp_path / "usage.csv"
    junk = bytes(range(1, 256)).replace(b"\n", b"").replace(b"\r", b"")
    invoice.write_bytes(CSV_HEAD.encode() + junk + b"\n"
                        + csv_text(invoice_line(calls[0])).replace("1", "1\x00", 1).encode()
                        + csv_text(invoice_line(calls[1])).encode())
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert 2 in problems_by_line(result)
    assert set(matched(result)) == {3, 4}  # the NUL in a caller number is not a digit


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_memory_stays_bounded_with_huge_fields_and_lines(lab, tmp_path, kind):
    """Hundreds of 60 KB callers (each one cached by its text before), a 24 MB line without
    an end: read in bounded pieces, each named as a problem, the good line still matched."""
    config, calls = lab
    mapping = write_mapping(tmp_path / "map.toml")
    good = invoice_line(calls[0])
    invoice = tmp_path / f"usage.{kind}"
    with invoice.open("w", encoding="utf-8") as out:
        if kind == "csv":
            out.write(CSV_HEAD)
        for i in range(400):
            huge = (f"{i:05d}" + "1" * 60_000, *good[2:])
            out.write(json_line(("", *huge)) + "\n" if kind == "jsonl" else csv_text(("", *huge)))
        out.write(json_line(good) + "\n" if kind == "jsonl" else csv_text(good))
        out.write("x" * 24_000_000 + "\n")
    run(config, invoice, mapping, "--format", "json")  # the modules are imported, caches warm
    tracemalloc.start()
    try:
        result = reconcile_json(config, invoice, mapping)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB for a 48 MB invoice"
    first = 2 if kind == "csv" else 1
    found = problems_by_line(result)
    assert found[first] == "caller_number: longer than 200 characters"
    assert found[first + 401] == "longer than 65536 characters"
    assert matched(result) == {first + 400: calls[0]["call_id"]}
    assert result["vendor_lines"] == 402 and result["problem_count"] == 401


def test_a_hundred_thousand_bad_lines(lab, tmp_path):
    """The problems kept are capped, all are counted, every line is counted, the good lines
    are reconciled, and what is said of the whole file (calls not rated) is never cut."""
    config, calls = lab
    assert cli(config, "rerate", "--period", PERIOD, "--plan", "per-call").exit_code == 0
    invoice = tmp_path / "usage.csv"
    with invoice.open("w", encoding="utf-8") as out:
        out.write(CSV_HEAD + csv_text(invoice_line(calls[0])))
        out.writelines(f",1390{i:07d},yesterday,60,0.12\n" for i in range(100_000))
        out.write(csv_text(invoice_line(calls[1])))
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert result["problem_count"] == 100_001
    assert len([p for p in result["problems"] if p["line"] is not None]) == 1000
    assert any("not rated under plan 'per-minute'" in p["message"] and p["line"] is None
               for p in result["problems"])
    assert result["vendor_lines"] == 100_002
    assert set(matched(result)) == {2, 100_003}


def test_an_unclosed_quote_says_which_lines_it_swallowed(lab, tmp_path):
    config, calls = lab
    invoice = tmp_path / "usage.csv"
    invoice.write_text(CSV_HEAD + csv_text(invoice_line(calls[0]))
                       + '"oops,' + ",".join(invoice_line(calls[1])[1:]) + "\n"
                       + csv_text(invoice_line(calls[2])), encoding="utf-8")
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert problems_by_line(result)[3] == ("1 fields where the header has 5 (lines 3-4 read "
                                           "as one line: a quote not closed?)")
    assert result["vendor_lines"] == 2


def test_rows_with_every_field_empty_are_blank(lab, tmp_path):
    """The empty rows spreadsheets leave at the end of an export are not lines; a row with
    text only outside the mapped columns (a totals row) is."""
    config, calls = lab
    invoice = tmp_path / "usage.csv"
    invoice.write_text("Note," + CSV_HEAD + csv_text(("", *invoice_line(calls[0])))
                       + ",,,,,\n , ,,,,\n\"\",\"\",,,,\nTotal: 0.12,,,,,\n", encoding="utf-8")
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert problems_by_line(result) == {6: "started_at: missing"}
    assert result["vendor_lines"] == 2


def test_semicolon_separated_exports_are_read(lab, tmp_path):
    """A spreadsheet in a decimal-comma locale separates fields with semicolons."""
    config, calls = lab
    lines = [(*line[:4], line[4].replace(".", ",")) for line in map(invoice_line, calls)]
    invoice = write_invoice(tmp_path / "usage.csv", lines, delimiter=";")
    mapping = write_mapping(tmp_path / "map.toml", MAPPING + "decimal_comma = true\n")
    result = reconcile_json(config, invoice, mapping)
    assert classes(result)["match"] == len(calls) and result["problems"] == []


def test_an_invoice_from_a_pipe(lab, tmp_path):
    """`--invoice /dev/stdin`, `<(zcat usage.csv.gz)`: a stream that cannot be seeked."""
    config, calls = lab
    text = CSV_HEAD + "".join(csv_text(invoice_line(c)) for c in calls)
    done = subprocess.run(
        [sys.executable, "-m", "botmeter.cli", "--config", str(config), "reconcile",
         "--period", PERIOD, "--invoice", "/dev/stdin", "--mapping",
         str(write_mapping(tmp_path / "map.toml")), "--format", "json"],
        input=text, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["classes"]["match"]["lines"] == len(calls)


# --- JSON lines -----------------------------------------------------------------------------


def test_json_values_that_are_not_text_or_numbers(lab, tmp_path):
    config, calls = lab
    line = invoice_line(calls[0])
    text = "\n".join([
        json_line(line, Duration=True),                       # 1
        json_line(line, Charge=None),                         # 2
        json_line(line, From=["139"]),                        # 3
        json_line(line).replace('"0.1200"', "NaN"),           # 4
        json_line(line).replace('"0.1200"', "-Infinity"),     # 5
        json_line(line).replace('"0.1200"', "1e3"),           # 6
        json_line(line).replace('"0.1200"', "9" * 5000),      # 7
        "[1, 2]",                                             # 8
        "null",                                               # 9
        '{"a": ' + "[" * 20_000 + "]" * 20_000 + "}",         # 10
        json_line(invoice_line(calls[1]), Duration=60),       # 11
    ]) + "\n"
    invoice = tmp_path / "usage.jsonl"
    invoice.write_text(text, encoding="utf-8")
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    found = problems_by_line(result)
    assert found[1] == "seconds: 'Duration' holds a JSON boolean"
    assert found[2] == "amount: missing"
    assert found[3] == "caller_number: 'From' holds a JSON list"
    assert found[4].startswith("amount: 'NaN' is not a decimal number")
    assert found[5].startswith("amount: '-Infinity' is not a decimal number")
    assert found[6].startswith("amount: '1e3' is not a decimal number")
    assert found[7] == "amount: longer than 200 characters"
    assert found[8] == found[9] == "not a JSON object"
    assert found[10] == "not JSON: nested too deeply"
    assert matched(result) == {11: calls[1]["call_id"]}


def test_lone_surrogate_escapes_are_read_as_replacement_characters(lab, tmp_path):
    r"""`"\ud800"` is valid JSON but no character: such a value is shown with U+FFFD and the
    line reported, as bytes that are not UTF-8 are (it crashed the reconciliation), with such
    bytes on the same line too."""
    config, calls = lab
    escaped = [json_line(invoice_line(call, session=f"{s}\\ud800")).replace("\\\\", "\\")
               for s, call in zip("st", calls[:2], strict=True)]
    invoice = tmp_path / "usage.jsonl"
    invoice.write_bytes(escaped[0].encode() + b"\n"
                        + escaped[1].replace("}", ', "x": "\xff"}').encode("latin-1") + b"\n"
                        + json_line(invoice_line(calls[2])).encode() + b"\n")
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert problems_by_line(result) == {
        1: "not valid UTF-8 (read with replacement characters)",
        2: "not valid UTF-8 (read with replacement characters)"}
    assert [line["vendor"]["session_id"] for line in result["lines"][:2]] == ["s\ufffd",
                                                                            "t\ufffd"]
    assert classes(result)["match"] == 3  # the calls carry no session id: by caller and time


@pytest.mark.parametrize("text", [
    '[{"From": "13900010001"}, {"From": "13900010003"}]\n',
    '{\n  "From": "13900010001"\n}\n',
])
def test_a_json_document_is_not_json_lines(lab, tmp_path, text):
    config, _ = lab
    invoice = tmp_path / "usage.json"
    invoice.write_text(text, encoding="utf-8")
    done = run(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert done.exit_code == 2
    assert (f"{invoice}:1: a JSON document, not JSON lines (one object per line; "
            "`jq -c '.[]'` converts an array)") in done.stderr


# --- values ---------------------------------------------------------------------------------


def test_times_with_odd_offsets_and_at_the_ends_of_the_calendar(lab, tmp_path):
    """+14:00, -12:00, +05:45 are the same instants; 9999-12-31 at -12:00 is in year 10000
    and 0001-01-01 at +14:00 in year 0 (both crashed the reconciliation): outside, named as
    the vendor wrote them."""
    from datetime import datetime, timedelta, timezone

    config, calls = lab

    def at(call: dict[str, Any], hours: int, minutes: int = 0) -> str:
        zone = timezone(timedelta(hours=hours, minutes=minutes))
        return datetime.fromisoformat(call["bot_answered_at"]).astimezone(zone).isoformat()

    lines = [invoice_line(calls[0], start=at(calls[0], 14)),
             invoice_line(calls[1], start=at(calls[1], -12)),
             invoice_line(calls[2], start=at(calls[2], 5, 45)),
             invoice_line(calls[3], start="9999-12-31T23:59:59-12:00"),
             invoice_line(calls[3], start="0001-01-01T00:00:00+14:00"),
             invoice_line(calls[3], start="2026-12-01T00:00:00+08:00")]
    invoice = write_invoice(tmp_path / "usage.csv", lines)
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert matched(result) == {2: calls[0]["call_id"], 3: calls[1]["call_id"],
                               4: calls[2]["call_id"]}
    found = problems_by_line(result)
    assert found[5] == ("started_at '9999-12-31T23:59:59-12:00' is outside 2026-11 "
                        "(Asia/Shanghai): not reconciled")
    assert found[6] == ("started_at '0001-01-01T00:00:00+14:00' is outside 2026-11 "
                        "(Asia/Shanghai): not reconciled")
    assert found[7] == ("started_at '2026-12-01T00:00:00+08:00' is outside 2026-11 "
                        "(Asia/Shanghai): not reconciled")


def test_local_times_in_a_repeated_or_skipped_hour(lab, tmp_path):
    """Decision: a wall-clock time the clocks pass twice (America/New_York, 2026-11-01
    01:30) is read as the first (EDT, -04:00: 05:30Z); one they skip (2026-03-08 02:30) with
    the offset before the change (EST, -05:00: 07:30Z)."""
    config, calls = lab
    moved = {calls[0]["call_id"]: "2026-11-01T05:30", calls[1]["call_id"]: "2026-03-08T07:30"}
    with sqlite3.connect(config.parent / "calls.db") as conn:
        for call_id, minute in moved.items():
            conn.execute("UPDATE calls SET offered_at = ?, bot_answered_at = ?, "
                         "bot_ended_at = ?, ended_at = ? WHERE call_id = ?",
                         (f"{minute}:00.000Z", f"{minute}:01.000Z", f"{minute}:05.000Z",
                          f"{minute}:05.000Z", call_id))
    mapping = write_mapping(tmp_path / "map.toml", MAPPING + 'timezone = "America/New_York"\n')
    invoice = write_invoice(tmp_path / "usage.csv", [
        invoice_line(calls[0], start="2026-11-01 01:30:01"),
        invoice_line(calls[1], start="2026-03-08 02:30:01")])
    november = reconcile_json(config, invoice, mapping)
    assert matched(november) == {2: calls[0]["call_id"]}
    march = reconcile_json(config, invoice, mapping, "--period", "2026-03")
    assert matched(march) == {3: calls[1]["call_id"]}


@pytest.mark.parametrize(("amount", "problem"), [
    ("1e3", "amount: '1e3' is not a decimal number"),
    ("0x10", "amount: '0x10' is not a decimal number"),
    ("١٢", "amount: '١٢' is not a decimal number"),
    ("１２", "amount: '１２' is not a decimal number"),
    ("1_000", "amount: '1_000' is not a decimal number"),
    ("12.5 CNY", "amount: '12.5 CNY' is not a decimal number"),
])
def test_amounts_that_are_not_plain_decimals(lab, tmp_path, amount, problem):
    config, calls = lab
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(calls[0], amount=amount)])
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert problems_by_line(result)[2].startswith(problem)


def test_padded_signed_zero_and_negative_amounts(lab, tmp_path):
    """'  12 ' and '+12' are 12; a zero amount is an amount; a negative one (a credit) is
    read as written, listed in its class, and never lowers the disputed amount."""
    config, calls = lab
    costs = [per_minute_billed(c["bot_seconds"])[1] for c in calls]
    lines = [invoice_line(calls[0], amount="  12 "), invoice_line(calls[1], amount="+12"),
             invoice_line(calls[2], amount="-0.1200"), invoice_line(calls[3], amount="0"),
             ("", "13700000000", calls[4]["bot_answered_at"], "60", "-5")]
    result = reconcile_json(config, write_invoice(tmp_path / "usage.csv", lines),
                            write_mapping(tmp_path / "map.toml"))
    assert result["problems"] == []
    by_line = {line["vendor"]["line"]: line for line in result["lines"] if line["vendor"]}
    assert [by_line[n]["vendor"]["amount"] for n in (2, 3, 4)] == ["12", "12", "-0.1200"]
    assert by_line[6]["class"] == "vendor_only"
    assert Decimal(result["classes"]["vendor_only"]["vendor_amount"]) == Decimal("-5")
    expected = (Decimal(12) - costs[0]) + (Decimal(12) - costs[1])
    expected += max(Decimal(0) - costs[3], Decimal(0))
    assert Decimal(result["disputed_amount"]) == expected


def test_a_decimal_comma_makes_the_point_a_thousands_separator(lab, tmp_path):
    """With `decimal_comma`, "1.234" is 1234 as "1.234,5" is 1234.5 (it was read as 1.234),
    and "0.12" is no amount (it was read as 0.12)."""
    config, calls = lab
    lines = [invoice_line(calls[0], amount="0,12"), invoice_line(calls[1], amount="0.12"),
             invoice_line(calls[2], amount="1.234"),
             invoice_line(calls[3], seconds="1.200", amount="0,12")]
    mapping = write_mapping(tmp_path / "map.toml", MAPPING + "decimal_comma = true\n")
    result = reconcile_json(config, write_invoice(tmp_path / "usage.csv", lines), mapping)
    by_line = {line["vendor"]["line"]: line["vendor"] for line in result["lines"]
               if line["vendor"]}
    assert by_line[2]["amount"] == "0.12"
    assert problems_by_line(result)[3].startswith("amount: '0.12' is not a decimal number "
                                                  "(a comma for decimals")
    assert by_line[4]["amount"] == "1234"
    assert by_line[5]["seconds"] == "1200"


# --- callers and session ids ----------------------------------------------------------------


@pytest.mark.parametrize(("written", "key"), [
    ("+86 139-0001-0001", "13900010001"),
    ("0086 139 0001 0001", "13900010001"),
    ("(0)139 0001 0001", "13900010001"),
    ("+86 (0)139 0001 0001", "13900010001"),  # the trunk 0 an international form may keep
    ("+86-0139-0001-0001", "13900010001"),
    ("tel:+8613900010001", "13900010001"),
    ("sip:+8613900010001@carrier", "13900010001"),
    ("١٣٩٠٠٠١٠٠٠١", "13900010001"),  # Arabic-Indic digits are digits
    ("１３９０００１０００１", "13900010001"),  # so are full-width ones
    ("+1 555 0100", "15550100"),  # another country's number stays international
    ("", None), ("anonymous", None), ("Anonymous", None), ("+", None), ("0", None),
])
def test_caller_numbers_in_every_form(written, key):
    assert caller_key(written, "86") == key


def test_a_caller_written_with_a_trunk_zero_after_the_country_code_matches(lab, tmp_path):
    config, calls = lab
    lines = [invoice_line(calls[0], caller="+86 (0)" + calls[0]["caller_number"]),
             invoice_line(calls[1], caller="tel:+86" + calls[1]["caller_number"]),
             invoice_line(calls[2], caller="anonymous")]
    result = reconcile_json(config, write_invoice(tmp_path / "usage.csv", lines),
                            write_mapping(tmp_path / "map.toml"))
    assert matched(result) == {2: calls[0]["call_id"], 3: calls[1]["call_id"]}


def test_two_calls_of_one_caller_seconds_apart_lines_in_crossed_order(lab, tmp_path):
    """Closest pairs first: line 2 is 2 s from call A's answer and 0.5 s from call B's offer,
    line 3 0.1 s from B's answer. Each line taking its nearest call in file order would give B
    to line 2 and leave line 3 with A, 2.9 s away; closest first gives B to line 3, A to 2."""
    from datetime import datetime, timedelta

    config, calls = lab
    a, b = calls[0], calls[1]
    t = datetime.fromisoformat(a["bot_answered_at"])
    with sqlite3.connect(config.parent / "calls.db") as conn:
        conn.execute("UPDATE calls SET caller_number = ?, offered_at = ?, bot_answered_at = ? "
                     "WHERE call_id = ?", (a["caller_number"], iso(t + timedelta(seconds=2.5)),
                                           iso(t + timedelta(seconds=3)), b["call_id"]))
    lines = [invoice_line(a, start=iso(t + timedelta(seconds=2))),
             invoice_line(a, start=iso(t + timedelta(seconds=2.9)))]
    result = reconcile_json(config, write_invoice(tmp_path / "usage.csv", lines),
                            write_mapping(tmp_path / "map.toml"))
    assert matched(result) == {2: a["call_id"], 3: b["call_id"]}


def iso(moment: Any) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def lab_with_sessions(write_config: Any, sessions: dict[int, str]) -> tuple[Path, list]:
    """The lab, its bot-answered calls numbered as in `lab`, the bots of those in `sessions`
    (index -> session id) sending it with a `start` signal."""
    _, calls = recorded_calls(write_config)
    answered = [c for c in calls if c["bot_answered_at"]]
    config, calls = recorded_calls(write_config, {answered[i]["call_id"]: session
                                                  for i, session in sessions.items()})
    return config, [c for c in calls if c["bot_answered_at"]]


def test_a_session_id_decides_whatever_caller_the_vendor_wrote(write_config, tmp_path):
    config, calls = lab_with_sessions(write_config, {0: "CA-0001"})
    assert calls[0]["bot_session_id"] == "CA-0001"
    lines = [invoice_line(calls[0], session="CA-0001", caller="+1 (555) 010-0000"),
             invoice_line(calls[1], session=" CA-0001 ".lower())]  # ids are exact: no match
    result = reconcile_json(config, write_invoice(tmp_path / "usage.csv", lines),
                            write_mapping(tmp_path / "map.toml"))
    by_line = {line["vendor"]["line"]: line for line in result["lines"] if line["vendor"]}
    assert (by_line[2]["call_id"], by_line[2]["matched_by"]) == (calls[0]["call_id"],
                                                                  "session_id")
    # line 3's id is trimmed but not folded: "ca-0001" is not "CA-0001"; the call of its
    # caller and time carries no session id, so it matches by caller
    assert by_line[3]["vendor"]["session_id"] == "ca-0001"
    assert (by_line[3]["call_id"], by_line[3]["matched_by"]) == (calls[1]["call_id"],
                                                                  "caller_time")


def test_one_session_id_on_two_calls_and_on_two_lines(write_config, tmp_path):
    """A bot that reused its platform's id: each line takes the closer call; a second line
    with the id is named as a repeat, and matches the second call."""
    config, calls = lab_with_sessions(write_config, {0: "S-1", 1: "S-1"})
    one = reconcile_json(config, write_invoice(tmp_path / "one.csv", [
        invoice_line(calls[1], session="S-1", caller="x")]), write_mapping(tmp_path / "m.toml"))
    assert matched(one) == {2: calls[1]["call_id"]}
    assert calls[0]["call_id"] in [line["call_id"] for line in one["lines"]
                                   if line["class"] == "botmeter_only"]
    two = reconcile_json(config, write_invoice(tmp_path / "two.csv", [
        invoice_line(calls[1], session="S-1"), invoice_line(calls[0], session="S-1")]),
        tmp_path / "m.toml")
    assert matched(two) == {2: calls[1]["call_id"], 3: calls[0]["call_id"]}
    assert problems_by_line(two)[3] == "repeats line 2 (same session id): billed twice?"


def test_a_session_id_of_another_months_call(lab, tmp_path):
    config, calls = lab
    with sqlite3.connect(config.parent / "calls.db") as conn:
        conn.execute("UPDATE calls SET bot_session_id = 'OCT', offered_at = "
                     "'2026-10-30T15:25:35.911Z', bot_answered_at = '2026-10-30T15:25:36.913Z', "
                     "bot_ended_at = '2026-10-30T15:25:39.918Z', ended_at = "
                     "'2026-10-30T15:25:39.918Z' WHERE call_id = ?", (calls[0]["call_id"],))
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(calls[0], session="OCT")])
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert problems_by_line(result)[2] == (
        f"bills call {calls[0]['call_id']} (offered 2026-10-30T15:25:35.911Z) that ended "
        "outside 2026-11: not reconciled here")
    assert all(line["vendor"] is None for line in result["lines"])


# --- the mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "keys"), [
    ('minutes = "Duration"\n', "seconds and minutes"),
    ('currency = "Charge"\n', "amount and currency"),
])
def test_a_mapping_naming_one_column_for_two_fields_is_refused(lab, tmp_path, change, keys):
    config, calls = lab
    mapping = write_mapping(tmp_path / "map.toml",
                            MAPPING.replace("[format]", change + "[format]"))
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(calls[0])])
    done = run(config, invoice, mapping)
    assert done.exit_code == 2
    assert f"{mapping}: columns: {keys} name the same column" in done.stderr


def test_a_mapping_with_cjk_column_names(lab, tmp_path):
    config, calls = lab
    header = ("会话ID", "主叫号码", "开始时间", "计费时长（秒）", "费用(元)")
    mapping = write_mapping(tmp_path / "map.toml", "[columns]\n" + "".join(
        f'{field} = "{column}"\n' for field, column in zip(
            ("session_id", "caller_number", "started_at", "seconds", "amount"), header,
            strict=True)) + '[format]\ncountry_code = "86"\n')
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(c) for c in calls],
                            header=("\u3000" + header[0], *header[1:]), bom=True)
    result = reconcile_json(config, invoice, mapping)
    assert classes(result)["match"] == len(calls) and result["problems"] == []


# --- the database and the plan --------------------------------------------------------------


def test_a_database_with_no_calls_and_a_period_with_none(lab, tmp_path):
    config, calls = lab
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(c) for c in calls])
    mapping = write_mapping(tmp_path / "map.toml")
    december = run(config, invoice, mapping, "--period", "2026-12", "--format", "json")
    result = json.loads(december.stdout)
    assert set(classes(result).values()) == {0} and result["problem_count"] == len(calls)
    with sqlite3.connect(config.parent / "calls.db") as conn:
        conn.execute("DELETE FROM calls")
    result = reconcile_json(config, invoice, mapping)
    assert classes(result)["vendor_only"] == len(calls)


def test_a_plan_without_a_time_charge(lab, tmp_path):
    """Per call: the vendor's seconds are held against the measured bot time; the message
    about unrated calls names the plan to rate them under."""
    config, calls = lab
    invoice = write_invoice(tmp_path / "usage.csv", [
        invoice_line(c, seconds=str(c["bot_seconds"]), amount="0.35") for c in calls])
    mapping = write_mapping(tmp_path / "map.toml")
    unrated = reconcile_json(config, invoice, mapping, "--plan", "per-call")
    assert any(p["message"].endswith("(botmeter rerate --period 2026-11 --plan per-call "
                                     "rates them)") for p in unrated["problems"])
    assert cli(config, "rerate", "--period", PERIOD, "--plan", "per-call").exit_code == 0
    result = reconcile_json(config, invoice, mapping, "--plan", "per-call")
    assert classes(result)["match"] == len(calls) and result["problems"] == []


def test_the_database_locked_by_a_writer(lab, tmp_path):
    """A writer holding `BEGIN IMMEDIATE` with a change not committed: reconcile reads the
    last committed calls, and does not wait."""
    config, calls = lab
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(config.parent / "calls.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(c) for c in calls])
        result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
        assert classes(result)["match"] == len(calls)
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0


HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE calls SET caller_number = 'x'")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def test_the_calls_and_their_callers_are_read_in_one_snapshot(lab, tmp_path, monkeypatch):
    """The keys of callers that are not plain digits are computed in Python, the others' in
    SQL as the calls are copied (in a thread, while the invoice is read): a caller changed by
    the agent running beside meanwhile must not leave a call without its key (it then matched
    no line). The change is made while the first key is computed."""
    from zoneinfo import ZoneInfo

    from botmeter.rating import period_bounds
    from botmeter.reconcile import reconciler
    from botmeter.tracking.record import iso_utc

    config, calls = lab
    db = config.parent / "calls.db"
    with sqlite3.connect(db) as writer:  # one caller in another form: its key is Python's
        writer.execute("UPDATE calls SET caller_number = '+86 ' || caller_number "
                       "WHERE call_id = ?", (calls[1]["call_id"],))
    start, end = period_bounds(PERIOD, ZoneInfo("Asia/Shanghai"))
    since, until = iso_utc(start - reconciler.MARGIN), iso_utc(end + reconciler.MARGIN)
    key = reconciler.caller_key
    changed = []

    def key_while_the_agent_writes(number: str, country: str | None) -> str | None:
        if not changed:
            with sqlite3.connect(db) as writer:
                writer.execute("UPDATE calls SET caller_number = '+86 137-0000-0000' "
                               "WHERE call_id = ?", (calls[0]["call_id"],))
            changed.append(number)
        return key(number, country)

    monkeypatch.setattr(reconciler, "caller_key", key_while_the_agent_writes)
    side = reconciler._open_calls_side(db, tmp_path / "side.db")
    reconciler._load_calls(side, country_code="86", since=since, until=until,
                           start=iso_utc(start), end=iso_utc(end), plan_id="per-minute",
                           metric="bot_seconds", charge=None)
    side.close()
    assert changed == [f"+86 {calls[1]['caller_number']}"]
    with sqlite3.connect(tmp_path / "side.db") as conn:
        rows = dict(conn.execute("SELECT call_id, ckey FROM recorded WHERE call_id IN (?, ?)",
                                 (calls[0]["call_id"], calls[1]["call_id"])))
    assert rows == {calls[0]["call_id"]: calls[0]["caller_number"],
                    calls[1]["call_id"]: calls[1]["caller_number"]}
    with sqlite3.connect(db) as conn:  # the change was made, after the snapshot
        assert conn.execute("SELECT caller_number FROM calls WHERE call_id = ?",
                            (calls[0]["call_id"],)).fetchone() == ("+86 137-0000-0000",)


# --- the output -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["invoice", "mapping", "database", "wal", "config"])
def test_out_never_overwrites_what_it_reads(lab, tmp_path, target):
    config, calls = lab
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(c) for c in calls])
    mapping = write_mapping(tmp_path / "map.toml")
    db = config.parent / "calls.db"
    path = {"invoice": invoice, "mapping": mapping, "database": db,
            "wal": Path(f"{db}-wal"), "config": config}[target]
    linked = tmp_path / "link"
    linked.symlink_to(path)
    before = {p: p.read_bytes() for p in (invoice, mapping, db, config)}
    for out in (path, linked):
        done = run(config, invoice, mapping, "--format", "csv", "--out", str(out))
        assert done.exit_code == 2, done.output
        assert f"botmeter: reconcile error: {out}: is the " in done.stderr
        assert "choose another --out" in done.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert classes(reconcile_json(config, invoice, mapping))["match"] == len(calls)


def test_out_into_a_missing_or_unwritable_folder(lab, tmp_path):
    config, calls = lab
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(calls[0])])
    mapping = write_mapping(tmp_path / "map.toml")
    for out, reason in ((tmp_path / "nowhere" / "r.json", "No such file or directory"),
                        (invoice / "r.json", "Not a directory")):
        done = run(config, invoice, mapping, "--out", str(out))
        assert done.exit_code == 1
        assert done.stderr == f"botmeter: reconcile error: {out}: cannot write it: {reason}\n"


def test_a_spreadsheet_never_runs_text_from_the_invoice_or_the_pbx(lab, tmp_path):
    """Callers are numbers, but a vendor (or a spoofed caller id) can write anything there."""
    config, calls = lab
    with sqlite3.connect(config.parent / "calls.db") as conn:
        conn.execute("UPDATE calls SET caller_number = '@SUM(A1)' WHERE call_id = ?",
                     (calls[0]["call_id"],))
    lines = [("", '=HYPERLINK("http://x")', calls[1]["bot_answered_at"], "60", "0.12"),
             ("", "+1+cmd|' /C calc'!A0", calls[2]["bot_answered_at"], "60", "0.12"),
             ("-2+3", "+86 139-0001-0004", calls[3]["bot_answered_at"], "60", "-0.12")]
    done = run(config, write_invoice(tmp_path / "usage.csv", lines),
               write_mapping(tmp_path / "map.toml"), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    cells = [value for row in rows for value in row.values() if value]
    assert not [v for v in cells if v[0] in "=+-@" and not v.replace(" ", "").replace(
        "-", "").replace("+", "").replace(".", "").isdigit()]
    assert "'=HYPERLINK(\"http://x\")" in cells and "'@SUM(A1)" in cells
    assert "'-2+3" in cells and "+86 139-0001-0004" in cells and "-0.12" in cells


def test_an_invoice_file_name_that_is_not_utf8(lab, tmp_path):
    config, calls = lab
    name = os.fsdecode(b"usage-\xff.csv")
    invoice = write_invoice(tmp_path / name, [invoice_line(calls[0])])
    out = tmp_path / "result.json"
    done = run(config, invoice, write_mapping(tmp_path / "map.toml"), "--format", "json",
               "--out", str(out))
    assert done.exit_code == 0, done.output
    assert json.loads(out.read_text(encoding="utf-8"))["invoice"].endswith("usage-\ufffd.csv")


# --- interruptions --------------------------------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(ROOT / "agent"), "TMPDIR": str(scratch)}


def threads_taking_stops(pid: int) -> list[str]:
    """The names of the process's threads, but its main one, that do not block SIGINT and
    SIGTERM (the kernel may hand either to any thread that takes it)."""
    taking = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = dict(line.split(":\t", 1) for line in
                          (task / "status").read_text().splitlines() if ":\t" in line)
        except OSError:
            continue  # ended meanwhile
        blocked = int(status["SigBlk"], 16)
        if int(task.name) != pid and not all(blocked >> (stop - 1) & 1
                                             for stop in (signal.SIGINT, signal.SIGTERM)):
            taking.append(status["Name"])
    return taking


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_it_leaves_no_temporary_folder_and_no_output(lab, tmp_path, signum):
    """Ctrl-C, or SIGTERM from `timeout` or a service manager, while the invoice is read (a
    FIFO whose writer pauses): the scratch folder and the half-written output go."""
    config, calls = lab
    fifo = tmp_path / "usage.csv"
    os.mkfifo(fifo)
    env = _env(tmp_path)
    out = tmp_path / "result.json"
    command = subprocess.Popen(
        [sys.executable, "-m", "botmeter.cli", "--config", str(config), "reconcile",
         "--period", PERIOD, "--invoice", str(fifo), "--mapping",
         str(write_mapping(tmp_path / "map.toml")), "--format", "json", "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with fifo.open("w", encoding="utf-8") as writer:  # opens once the command reads
            writer.write(CSV_HEAD + csv_text(invoice_line(calls[0])))
            writer.flush()
            scratch = Path(env["TMPDIR"])
            # reading the FIFO line by line (the column-wise reader has declined it)
            eventually_sync(lambda: any(scratch.glob("*/invoice.db")), timeout=30)
            # a signal to any other thread would leave this read waiting for the writer
            assert threads_taking_stops(command.pid) == []
            command.send_signal(signum)
            _, err = command.communicate(timeout=30)
    except BrokenPipeError:  # the command is gone before the writer closed
        _, err = command.communicate(timeout=30)
    finally:
        command.kill()
    assert command.returncode == 1, err
    assert err.endswith("botmeter: aborted: interrupted\n") and "Traceback" not in err
    assert list(Path(env["TMPDIR"]).iterdir()) == []
    assert list(tmp_path.glob("*result.json*")) == []


def test_a_reader_that_goes_away(lab, tmp_path):
    """`| head -1`: no traceback, and the scratch folder goes."""
    config, calls = lab
    invoice = write_invoice(tmp_path / "usage.csv", [
        invoice_line(calls[i % len(calls)], start=f"2026-11-{1 + i % 28:02d}T00:00:{i % 60:02d}Z")
        for i in range(5000)])
    env = _env(tmp_path)
    command = subprocess.Popen(
        [sys.executable, "-m", "botmeter.cli", "--config", str(config), "reconcile",
         "--period", PERIOD, "--invoice", str(invoice), "--mapping",
         str(write_mapping(tmp_path / "map.toml")), "--format", "csv"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert command.stdout is not None and command.stdout.readline().startswith(b"class,")
    command.stdout.close()
    assert command.wait(timeout=60) == 1
    assert command.stderr is not None and b"Traceback" not in command.stderr.read()
    assert list(Path(env["TMPDIR"]).iterdir()) == []
