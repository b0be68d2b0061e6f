"""The fault-injection suite at reduced counts: a clean run and one run per fault (80 calls at
20 calls/s each, all at once), judged against the simulated PBX's truth file. The same runs
at the issue's counts: `python -m tests.faults --full`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from .faults import CLEAN, FAULTS, REDUCED
from .harness import RunResult, run_suite
from .table import render

RUNS = (CLEAN, *FAULTS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunResult]]:
    root = tmp_path_factory.mktemp("faults")
    results = asyncio.run(run_suite(FAULTS, REDUCED, root, jobs=len(RUNS)))
    print("\n" + render(results, REDUCED))  # the table, with -s or in a failure's report
    yield {result.fault: result for result in results}


def log_of(result: RunResult, name: str) -> str:
    return (result.root / f"{name}.log").read_text(encoding="utf-8", errors="replace")


@pytest.mark.parametrize("fault", RUNS)
def test_every_scripted_call_is_recorded_once(runs: dict[str, RunResult], fault: str) -> None:
    result = runs[fault]
    verdict = result.verdict
    assert result.caught_up, "the agent never stored every call: " + "; ".join(result.problems())
    assert verdict.scripted >= REDUCED.calls // 2
    assert not verdict.missing, verdict.problems()
    assert not verdict.extra and not verdict.duplicates, verdict.problems()
    assert verdict.recorded == verdict.scripted


@pytest.mark.parametrize("fault", RUNS)
def test_every_outcome_and_bot_time_is_right(runs: dict[str, RunResult], fault: str) -> None:
    verdict = runs[fault].verdict
    assert not verdict.wrong_outcome, verdict.problems()
    assert not verdict.bot_off, verdict.problems()
    assert verdict.max_bot_delta <= 0.35


@pytest.mark.parametrize("fault", RUNS)
def test_the_statement_total_is_the_clean_runs(runs: dict[str, RunResult], fault: str) -> None:
    result = runs[fault]
    assert result.totals == result.clean_totals
    # and the clean total is that of the truth file's records, rated by botmeter's rating
    assert result.totals == result.truth_totals
    assert all(total > 0 for total in result.totals.values())


@pytest.mark.parametrize("fault", RUNS)
def test_the_agent_stops_on_sigterm_with_every_call_stored(runs: dict[str, RunResult],
                                                           fault: str) -> None:
    assert runs[fault].agent_exit == 0, log_of(runs[fault], "agent")[-3000:]


def test_no_call_is_joined_late_with_cel_to_heal_from(runs: dict[str, RunResult]) -> None:
    assert {fault: r.joined_late for fault, r in runs.items()} == dict.fromkeys(RUNS, 0)


def test_kills_struck_throughout_and_every_restart_healed(runs: dict[str, RunResult]) -> None:
    result = runs["kill"]
    assert result.did.times >= 10
    assert log_of(result, "agent").count("--- agent start") == result.did.times + 1
    assert log_of(result, "agent").count('"gap healed"') >= 3


def test_the_ami_link_was_cut_with_the_agent_on_it(runs: dict[str, RunResult]) -> None:
    result = runs["cut"]
    assert result.did.times >= 5  # live connections cut
    assert log_of(result, "agent").count('"ami detached"') >= 5


def test_the_pbx_restart_cut_calls_short(runs: dict[str, RunResult]) -> None:
    result = runs["restart"]
    assert result.did.times == 1
    assert "restarting, down for" in log_of(result, "sim")
    truth = (result.root / "truth.jsonl").read_text(encoding="utf-8")
    assert '"cut": true' in truth  # calls in progress at the restart ended with it
    assert result.not_placed > 0  # and calls due while it was down never began


def test_the_lock_held_up_the_agents_writes(runs: dict[str, RunResult]) -> None:
    result = runs["lock"]
    assert result.did.times >= REDUCED.lock_seconds - 1
    assert "database is locked" in log_of(result, "agent")


def test_the_receiver_flapped_and_ends_with_the_databases_summaries(
        runs: dict[str, RunResult]) -> None:
    result = runs["flap"]
    assert result.did.times >= 5 and "down when the hour ended" in result.did.detail
    assert '"uplink delivery failed; retrying later"' in log_of(result, "agent")
    assert result.uplink_equal, result.uplink
    assert all(r.uplink_equal is None for r in runs.values() if r.fault != "flap")


def test_the_table_has_a_row_per_run(runs: dict[str, RunResult]) -> None:
    text = render(list(runs.values()), REDUCED)
    for fault in RUNS:
        assert f"│ {fault} " in text
    assert "max |Δ bot_seconds|" in text and "statement total" in text
