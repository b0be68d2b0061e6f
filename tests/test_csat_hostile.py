"""csat against a hostile tester's inputs: numbers too long to be read as other numbers, a field
given twice, `+` in a query, and stored ratings that are not ratings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from botmeter.bot.protocol import signal_fields
from botmeter.config import load_config
from botmeter.pbx.events import BotSignal
from botmeter.pbx.stream import decode_event
from botmeter.storage.store import CallFilter, CallStore
from botmeter.tracking.record import Csat
from botmeter.tracking.signals import CsatSignal, SignalError, Usage, parse_signal

from .rating_support import PLANS_DIR, make_call


def fastagi(query: str) -> dict[str, str]:
    return signal_fields(query=query)[0]


def userevent(*lines: str) -> dict[str, str]:
    raw = "\r\n".join(["Event: UserEvent", "UserEvent: BotMeter", "Uniqueid: 1.1",
                       "Linkedid: 1.1", "Signal: csat", *lines]).encode()
    event = decode_event(raw, 0.0)
    assert isinstance(event, BotSignal)
    return dict(event.fields)


@pytest.mark.parametrize("fields", [
    {"Score": "0" * 199 + "10", "Scale": "10"},  # cut at 200 it would read 1
    {"Score": "0" * 199 + "45"},                 # cut at 200 it would read 4
    {"Score": "4", "Scale": "0" * 300 + "5"},
])
def test_a_number_too_long_is_refused_never_cut_into_another(fields: dict[str, str]) -> None:
    with pytest.raises(SignalError, match="too long"):
        parse_signal("csat", fields)
    via_query = "&".join(f"{k.lower()}={v}" for k, v in fields.items())
    with pytest.raises(SignalError, match="too long"):
        parse_signal("csat", fastagi(via_query))


def test_a_quantity_too_long_is_refused() -> None:
    with pytest.raises(SignalError, match="longer than 200"):
        parse_signal("usage", {"Module": "asr", "Quantity": "0" * 199 + "12", "Unit": "s"})
    assert parse_signal("usage", {"Module": "asr", "Quantity": "0" * 150 + "12",
                                  "Unit": "s"}) == Usage("asr", 12, "s")  # type: ignore[arg-type]


def test_a_field_given_twice_counts_once_the_same_way_in_every_style() -> None:
    from_ami = parse_signal("csat", userevent("Score: 5", "Score: 1"))
    from_ami_cases = parse_signal("csat", userevent("Score: 5", "score: 1"))
    from_query = parse_signal("csat", fastagi("score=5&score=1"))
    from_args = parse_signal("csat", signal_fields(args=["score=5", "Score=1"])[0])
    assert from_ami == from_ami_cases == from_query == from_args == CsatSignal(5, 5, None)
    # an argument wins over the query, as documented
    assert parse_signal("csat", signal_fields("score=2", ["score=3"])[0]) == CsatSignal(3, 5, None)


@pytest.mark.parametrize("query", ["score=+4", "score=4+", "score=%2B4"])
def test_a_plus_in_a_query_is_a_plus_sign(query: str) -> None:
    with pytest.raises(SignalError, match="not a whole number"):
        parse_signal("csat", fastagi(query))


GARBAGE = ['not json', '"4"', 'null', '{}', '[]', '{"score":4}', '{"score":"x","scale":5}',
           '{"score":4,"scale":0}', '{"score":1,"scale":1}', '{"score":6,"scale":5}',
           '{"score":-3,"scale":-5}', '{"score":4.7,"scale":5}',
           '{"score":99999999999999999999999,"scale":5}']


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """A database whose every call but one carries something that is not a rating."""
    db = tmp_path / "calls.db"
    store = CallStore(db)
    calls = [make_call(f"c{i}", bot=30.0 + i) for i in range(len(GARBAGE) + 1)]
    store.save([calls[0]._replace(csat=Csat(4, 5)), *calls[1:]])
    for i, text in enumerate(GARBAGE, start=1):
        store.db.conn.execute("UPDATE calls SET csat = ? WHERE call_id = ?", (text, f"c{i}"))
    store.close()
    return db


def test_stored_ratings_that_are_not_ratings_read_as_none_everywhere(damaged: Path) -> None:
    store = CallStore(damaged)
    calls = store.calls()
    assert len(calls) == len(GARBAGE) + 1
    assert {c.call_id: c.csat for c in calls if c.csat is not None} == {"c0": Csat(4, 5)}
    # the filters match what reads back, and only that
    assert [c.call_id for c in store.calls(CallFilter(csat_min=1))] == ["c0"]  # type: ignore[arg-type]
    assert [c.call_id for c in store.calls(CallFilter(csat_max=5))] == ["c0"]  # type: ignore[arg-type]
    store.close()


def test_commands_go_on_past_damaged_ratings(damaged: Path, tmp_path: Path,
                                             write_config) -> None:
    import shutil

    plans = tmp_path / "plans"
    plans.mkdir()
    shutil.copy(PLANS_DIR / "combined.toml", plans / "combined.toml")
    config = write_config(extra='\n[plans]\ndir = "plans"\nactive = "combined"\n')
    assert load_config(config).store_path() == damaged

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "botmeter.cli", "--config", str(config),
                               *args], capture_output=True, text=True, timeout=60)

    listed = run("calls", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [c["csat"] for c in json.loads(listed.stdout)].count(None) == len(GARBAGE)
    assert run("calls", "--csat-min", "4", "--format", "csv").returncode == 0
    for args in (("bill", "--period", "2026-11"), ("rerate", "--period", "2026-11"),
                 ("bill", "--period", "2026-11", "--format", "json")):
        done = run(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    statement = json.loads(run("bill", "--period", "2026-11", "--format", "json").stdout)
    [csat] = [c for c in statement["sla"] if c["clause"] == "csat"]
    assert csat["sample"] == 1 and csat["measured"] == "4"


def test_the_end_of_input_reports_held_signals_and_what_the_rate_limit_held_back() -> None:
    from botmeter.tracking.rules import TrackingRules
    from botmeter.tracking.tracker import REPORTS_PER_SWEEP, CallTracker

    problems: list[tuple[str, dict]] = []
    tracker = CallTracker(TrackingRules.build(inbound_contexts=["from-pstn"],
                                              bot_contexts=["voicebot"]),
                          on_problem=lambda m, c: problems.append((m, c)))
    for n in range(REPORTS_PER_SWEEP + 7):  # bad signals for a call nobody has seen
        tracker.feed(BotSignal(1.0 + n, "9.9", "9.9", "csat", {"Score": "banana"}))
    tracker.feed(BotSignal(99.0, "8.8", "8.8", "csat", {"Score": "4"}))  # held: no call 8.8
    tracker.end_of_input()
    assert tracker.dropped_signals == 1
    assert ("bot signal dropped: input ended before their call was seen",
            {"linkedid": "8.8", "signals": 1}) in problems
    assert [c for m, c in problems if m == "malformed bot signal ignored (more of the same)"] == [
        {"not_logged": 7}]
