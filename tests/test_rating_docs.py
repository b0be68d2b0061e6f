"""docs/plans.md and the engine agree: its complete example plan, billed for the month it
describes, gives exactly the statement JSON it shows."""

from __future__ import annotations

import io
import json
import re
import tomllib
from pathlib import Path

from botmeter.rating import build_statement, parse_plan
from botmeter.reports.billing import render_statement
from botmeter.tracking.record import CallRecord
from tests.rating_support import local_ms, make_call

DOC = (Path(__file__).resolve().parent.parent / "docs" / "plans.md").read_text(encoding="utf-8")


def block(after: str, lang: str) -> str:
    """The first ```lang block after the heading `after`."""
    found = re.search(rf"{re.escape(after)}.*?```{lang}\n(.*?)```", DOC, re.S)
    assert found, (after, lang)
    return found.group(1)


def january_calls() -> list[CallRecord]:
    """The month the example describes: 780 calls the bot answered (90 s of bot time and 60 s
    of speech recognition each; 36 of them handed to agents after 6 s of ringing, the others
    answered after 2 s) and 50 abandoned calls (30 within a second, 20 after 8 s). 200 of the
    handled calls are rated: 120 gave 5 of 5, 50 gave 4 of 5, 30 gave 7 of 10."""
    ratings = [(5, 5)] * 120 + [(4, 5)] * 50 + [(7, 10)] * 30
    calls = []
    for i in range(780):
        end = local_ms(2027, 1, 2) + i * 60_000
        slow = i < 36
        rating = ratings[i - 36] if 36 <= i < 236 else None
        calls.append(make_call(f"a{i:03d}", 90, end_ms=end, ring=6.0 if slow else 2.0,
                               outcome="transferred" if slow else "handled",
                               after_bot=30.0 if slow else 0.0, modules={"asr": 60},
                               csat=rating))
    for i in range(50):
        calls.append(make_call(f"x{i:02d}", None, end_ms=local_ms(2027, 1, 20) + i * 60_000,
                               ring=0.5 if i < 30 else 8.0, outcome="abandoned"))
    return calls


def test_the_complete_example_bills_as_the_statements_section_shows() -> None:
    plan = parse_plan(tomllib.loads(block("### A complete example", "toml")), "acme.toml")
    shown = json.loads(block("`--format json` prints one object", "json"))
    assert build_statement(plan, "2027-01", january_calls()).to_json() == shown


def test_the_sla_clauses_table_is_what_bill_prints() -> None:
    plan = parse_plan(tomllib.loads(block("### A complete example", "toml")), "acme.toml")
    out = io.StringIO()
    render_statement(build_statement(plan, "2027-01", january_calls()), "table", out)
    printed = [line.rstrip() for line in out.getvalue().splitlines()]
    shown = block("the lines; for", "").rstrip("\n").splitlines()
    start = printed.index(shown[0])
    assert printed[start:start + len(shown)] == shown
    assert "│ satisfaction │     4.55 of 5 │ >= 4.0 of 5" in shown[5]


def test_no_example_in_the_doc_uses_keys_this_version_refuses() -> None:
    for text in re.findall(r"```toml\n(.*?)```", DOC, re.S):
        data = tomllib.loads(text)
        if "plan" in data:  # a whole plan file: it must load
            parse_plan(data, "docs/plans.md")
