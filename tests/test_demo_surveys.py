"""The demo's callers rate their calls: every kind of survey is scripted, and live against the
simulated PBX the agent records the number of ratings and their mean that the script says."""

from __future__ import annotations

from pathlib import Path

from botmeter.demo import example_plans, record_scripted_calls, survey_line
from botmeter.sim.scenarios import demo_calls, expected_csat, mixed_calls


def test_the_scripted_surveys_cover_every_kind() -> None:
    calls = [c for c in mixed_calls(36) if c.csat]
    assert {c.survey for c in calls} == {"bot", "after_human", "caller_gone"}
    assert any(scale == "10" for c in calls for _, scale in c.csat)
    bad = [c for c in calls if len(c.csat) > 1]
    assert bad and all(expected_csat(c.csat[:1]) is None for c in bad)  # the first is refused


async def test_the_demo_records_the_scripted_surveys(tmp_path: Path) -> None:
    calls = demo_calls(36)
    records = await record_scripted_calls(calls, tmp_path / "demo.db", speed=40, concurrency=8,
                                          plans=example_plans())
    line, same = survey_line(calls, records)
    rated = [r for r in records if r.csat is not None]
    assert same, line
    assert len(rated) == sum(expected_csat(c.csat) is not None for c in calls) >= 6
    by_number = {r.caller_number: r.csat for r in records}
    for call in calls:
        want = expected_csat(call.csat)
        got = by_number[call.caller_number]
        assert (None if got is None else got.to_json()) == want, call.caller_number


async def test_a_second_demo_into_the_same_database_judges_its_own_calls(tmp_path: Path) -> None:
    calls = demo_calls(12)
    db = tmp_path / "demo.db"
    first = await record_scripted_calls(calls, db, speed=60, concurrency=6)
    second = await record_scripted_calls(calls, db, speed=60, concurrency=6)
    assert len(first) == len(second) == 12  # not the first run's calls too
    assert survey_line(calls, second)[1]
