"""Bad invoices, mappings and arguments: a clear message naming the file and line, the rest
still reconciled, the problems listed in the output, never a traceback."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

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


@pytest.fixture
def lab(write_config):  # type: ignore[no-untyped-def]
    config, calls = recorded_calls(write_config)
    return config, [c for c in calls if c["bot_answered_at"]]


def run(config: Path, invoice: Path, mapping: Path, *args: str):  # type: ignore[no-untyped-def]
    return cli(config, "reconcile", "--period", PERIOD, "--invoice", str(invoice),
               "--mapping", str(mapping), *args)


def problems_by_line(result: dict) -> dict[int | None, str]:
    return {p["line"]: p["message"] for p in result["problems"]}


def test_bad_lines_are_named_by_line_and_the_rest_is_reconciled(lab, tmp_path):
    config, calls = lab
    good = [invoice_line(c) for c in calls]
    first = calls[0]
    bad = [
        invoice_line(first, start="yesterday"),                      # line 2
        invoice_line(first, amount="12,5"),                          # line 3
        invoice_line(first, amount="¥0.12"),                         # line 4
        invoice_line(first, seconds="-5"),                           # line 5
        invoice_line(first, seconds=""),                             # line 6
        invoice_line(first, amount="0.1234567"),                     # line 7
    ]
    invoice = write_invoice(tmp_path / "usage.csv", bad + good)
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    found = problems_by_line(result)
    assert "started_at: 'yesterday' is not a time" in found[2]
    assert "amount: '12,5' is not a decimal number" in found[3]
    assert "amount: '¥0.12' is not a decimal number" in found[4]
    assert "seconds: -5 is negative" in found[5]
    assert "seconds: missing" in found[6]
    assert "more than 6 decimal places" in found[7]
    assert all(p["file"] == str(invoice) for p in result["problems"])
    assert result["classes"]["match"]["lines"] == len(good)  # the good lines all matched
    assert result["problem_count"] == len(bad) == len(result["problems"])


def test_another_currency_a_repeated_line_and_a_line_of_another_month(lab, tmp_path):
    config, calls = lab
    header = (*HEADER, "Currency")
    lines = [(*invoice_line(c), "CNY") for c in calls]
    lines.append((*invoice_line(calls[0]), "USD"))  # another currency
    lines.append(lines[1])  # the vendor bills the second call twice
    lines.append(("", "+8613911112222", "2026-10-15T08:00:00Z", "60", "0.12", "CNY"))  # October
    invoice = write_invoice(tmp_path / "usage.csv", lines, header=header)
    mapping = write_mapping(tmp_path / "map.toml",
                            MAPPING.replace("[format]", 'currency = "Currency"\n[format]'))
    result = reconcile_json(config, invoice, mapping)
    found = problems_by_line(result)
    n = len(calls) + 1  # the last good line's number
    assert found[n + 1] == "currency: 'USD' is not the plan's CNY"
    assert found[n + 2] == "repeats line 3 (same caller, start, duration and amount): billed twice?"
    assert found[n + 3] == ("started_at '2026-10-15T08:00:00Z' is outside 2026-11 "
                            "(Asia/Shanghai): not reconciled")
    # the repeat is billed but has no call of its own: disputed as billed, not recorded
    only = [line for line in result["lines"] if line["class"] == "vendor_only"]
    assert [line["vendor"]["line"] for line in only] == [n + 2]
    assert Decimal(result["disputed_amount"]) == per_minute_billed(calls[1]["bot_seconds"])[1]
    listed = {line["vendor"]["line"] for line in result["lines"] if line["vendor"]}
    assert n + 1 not in listed and n + 3 not in listed  # set aside, not classed


def test_a_session_id_billed_twice_is_named(lab, tmp_path):
    config, calls = lab
    lines = [invoice_line(calls[0], session="S-1"), invoice_line(calls[1], session="S-1")]
    invoice = write_invoice(tmp_path / "usage.csv", lines)
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert problems_by_line(result)[3] == "repeats line 2 (same session id): billed twice?"


def test_bom_tabs_json_lines_and_a_comma_for_decimals_read_alike(lab, tmp_path):
    config, calls = lab
    lines = [invoice_line(c) for c in calls]
    plain = reconcile_json(config, write_invoice(tmp_path / "a.csv", lines),
                           write_mapping(tmp_path / "map.toml"))
    tabbed = reconcile_json(config, write_invoice(tmp_path / "b.tsv", lines, delimiter="\t",
                                                  bom=True), tmp_path / "map.toml")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps(dict(zip(HEADER, (*line[:3], float(line[3]),
                                                           line[4]), strict=True))) + "\n"
                             for line in lines), encoding="utf-8")
    from_json = reconcile_json(config, jsonl, tmp_path / "map.toml")
    comma = [(*line[:4], line[4].replace(".", ",")) for line in lines]
    decimal_comma = reconcile_json(
        config, write_invoice(tmp_path / "d.csv", comma, delimiter="\t"),
        write_mapping(tmp_path / "comma.toml", MAPPING + "decimal_comma = true\n"))
    for other in (tabbed, from_json, decimal_comma):
        assert other["classes"] == plain["classes"] and other["problems"] == []
    assert plain["classes"]["match"]["lines"] == len(lines)


def test_local_times_with_a_format_and_minutes_only(lab, tmp_path):
    """A vendor writing Shanghai wall-clock times without an offset, and billed minutes."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    config, calls = lab
    zone = ZoneInfo("Asia/Shanghai")
    lines = []
    for c in calls:
        local = datetime.fromisoformat(c["bot_answered_at"]).astimezone(zone)
        billed, cost = per_minute_billed(c["bot_seconds"])
        lines.append(("", c["caller_number"], local.strftime("%Y/%m/%d %H:%M:%S"),
                      str(Decimal(billed) / 60), str(cost)))
    mapping = write_mapping(tmp_path / "map.toml", MAPPING.replace(
        'seconds = "Duration"', 'minutes = "Duration"') + 'timezone = "Asia/Shanghai"\n'
        'time_format = "%Y/%m/%d %H:%M:%S"\n')
    result = reconcile_json(config, write_invoice(tmp_path / "usage.csv", lines), mapping)
    assert result["classes"]["match"]["lines"] == len(lines) and result["problems"] == []
    assert all("minutes" in line["vendor"] for line in result["lines"])


def test_a_ragged_line_and_bytes_that_are_not_utf8(lab, tmp_path):
    config, calls = lab
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(c) for c in calls])
    text = invoice.read_bytes().replace(b"\n", b"\nonly,three,fields\n", 1)
    text += b'"x\xff",' + b",".join(s.encode() for s in invoice_line(calls[0])[1:]) + b"\n"
    invoice.write_bytes(text)
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    found = problems_by_line(result)
    assert found[2] == "3 fields where the header has 5"
    assert "not valid UTF-8" in found[len(calls) + 3]
    assert result["classes"]["match"]["lines"] == len(calls)


def test_calls_not_rated_under_the_plan_are_said(lab, tmp_path):
    config, calls = lab
    assert cli(config, "rerate", "--period", PERIOD, "--plan", "per-call").exit_code == 0
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(c) for c in calls])
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert result["unrated_calls"] == len(calls)
    assert any("not rated under plan 'per-minute'" in p["message"] for p in result["problems"])


@pytest.mark.parametrize(("mapping", "expected"), [
    (MAPPING.replace('amount = "Charge"', 'amount = "Charge"\nprice = "Unit"'),
     "columns.price: unknown key"),
    (MAPPING.replace('amount = "Charge"\n', ""), "columns.amount: required key is missing"),
    (MAPPING.replace('seconds = "Duration"\n', ""), "give `seconds` or `minutes`"),
    (MAPPING + 'timezone = "Mars/Olympus"\n', "unknown time zone 'Mars/Olympus'"),
    (MAPPING + 'currency = "XYZ"\n', "unknown currency 'XYZ'"),
    ("[columns\n", "not valid TOML"),
])
def test_a_bad_mapping_is_refused_with_its_file_and_key(lab, tmp_path, mapping, expected):
    config, calls = lab
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(calls[0])])
    done = run(config, invoice, write_mapping(tmp_path / "map.toml", mapping))
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert str(tmp_path / "map.toml") in done.stderr and expected in done.stderr


def test_an_invoice_that_cannot_be_reconciled_at_all(lab, tmp_path):
    config, calls = lab
    mapping = write_mapping(tmp_path / "map.toml")
    renamed = write_invoice(tmp_path / "a.csv", [invoice_line(calls[0])],
                            header=("CallSid", "Caller", "StartTime", "Duration", "Charge"))
    done = run(config, renamed, mapping)
    assert done.exit_code == 2
    assert f"{renamed}:1: no column 'From' (the mapping's caller_number)" in done.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert "the file is empty" in run(config, empty, mapping).stderr
    missing = run(config, tmp_path / "nowhere.csv", mapping)
    assert missing.exit_code == 2 and "cannot read" in missing.stderr


def test_an_optional_column_missing_is_a_problem_not_a_stop(lab, tmp_path):
    config, calls = lab
    lines = [invoice_line(c)[1:] for c in calls]
    invoice = write_invoice(tmp_path / "usage.csv", lines, header=HEADER[1:])
    result = reconcile_json(config, invoice, write_mapping(tmp_path / "map.toml"))
    assert problems_by_line(result)[1] == ("no column 'CallSid' (the mapping's session_id): "
                                           "read without it")
    assert result["classes"]["match"]["lines"] == len(calls)


@pytest.mark.parametrize("args", [("--tolerance", "-1"), ("--amount-tolerance", "1e3"),
                                  ("--period", "2026-13"), ("--format", "pdf"),
                                  ("--limit", "0")])
def test_bad_arguments_are_usage_errors(lab, tmp_path, args):
    config, calls = lab
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(calls[0])])
    done = run(config, invoice, write_mapping(tmp_path / "map.toml"), *args)
    assert done.exit_code == 2 and "Traceback" not in done.output


def test_a_month_before_the_plan_starts_is_a_plan_error(lab, tmp_path):
    config, calls = lab
    invoice = write_invoice(tmp_path / "usage.csv", [invoice_line(calls[0])])
    done = cli(config, "reconcile", "--period", "2025-06", "--invoice", str(invoice),
               "--mapping", str(write_mapping(tmp_path / "map.toml")))
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert "botmeter: plan error:" in done.stderr and "no version in force in 2025-06" in done.stderr
