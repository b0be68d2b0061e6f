"""What `botmeter calls` shows people and programs: safe tables, CSV as JSON spells values, time
bounds at the stored millisecond; and options that must be finite numbers."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from botmeter.cli import main
from botmeter.storage.store import CallStore

from .rating_support import make_call

OFFERED = datetime(2026, 11, 27, 14, 33, 19, 30_000, tzinfo=UTC)  # 14:33:19.030Z


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "calls.db"
    offered_ms = round(OFFERED.timestamp() * 1000)
    hostile = make_call("c1", end_ms=offered_ms + 30_000, offered_ms=offered_ms)._replace(
        caller_name="\x00\x1b[31mRED\x7f\x9b", transfer_target="q\x1b]0;title\x07",
        outcome="transferred", transferred_at=(offered_ms + 20_000) / 1000,
        human_answered_at=(offered_ms + 25_000) / 1000)
    store = CallStore(path)
    store.save([hostile])
    store.close()
    return path


def calls(db: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["calls", "--db", str(db), *args])
    return result.exit_code, result.output


def test_the_table_never_sends_control_characters_to_the_terminal(db: Path) -> None:
    code, out = calls(db, "--format", "table")
    assert code == 0 and "RED" in out
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in out), repr(out)
    # JSON keeps the name as stored (escaped by JSON itself)
    assert json.loads(calls(db, "--format", "json")[1])[0]["caller_name"] == "\x00\x1b[31mRED\x7f\x9b"


def test_csv_spells_booleans_as_json_does(db: Path) -> None:
    code, out = calls(db, "--format", "csv")
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and row["transfer_answered"] == "true"


@pytest.mark.parametrize(("option", "bound", "listed"), [
    ("--until", "2026-11-27T14:33:19.0301Z", 1),  # offered 19.030 is before 19.0301
    ("--until", "2026-11-27T14:33:19.030Z", 0),
    ("--since", "2026-11-27T14:33:19.0305Z", 0),  # offered 19.030 is before 19.0305
    ("--since", "2026-11-27T14:33:19.030Z", 1),
    ("--since", "2026-11-27T14:33:19.0299Z", 1),
])
def test_time_bounds_finer_than_a_millisecond(db: Path, option: str, bound: str,
                                              listed: int) -> None:
    code, out = calls(db, option, bound, "--format", "json")
    assert code == 0 and len(json.loads(out)) == listed


@pytest.mark.parametrize("args", [
    ["demo", "--speed", "nan"], ["run", "--stop-timeout", "nan"],
    ["calls", "--limit", "99999999999999999999999"],
])
def test_numbers_out_of_range_are_usage_errors(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("botmeter: usage error: ") and len(result.stderr.splitlines()) == 1
