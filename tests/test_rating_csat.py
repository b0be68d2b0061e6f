"""The SLA's satisfaction clause (min_csat): plan keys, measure, verdicts, credits, mixed
scales, and how statements, `bill` and `plans compare` show every clause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from botmeter.rating import PlanError, build_statement, compare_plans
from botmeter.rating.compare import ScaledTotal
from botmeter.storage.store import CallStore
from botmeter.tracking.record import CallRecord
from tests.rating_support import PLANS_DIR, D, example, make_call, plan_from

ROOT = Path(__file__).resolve().parent.parent

CHARGE = """
[[charge]]
name = "Handled calls"
metric = "calls"
outcomes = ["handled"]
price = "1.25"
"""
CSAT_ONLY = CHARGE + """
[sla]
fee = "100.00"
min_csat = "4.2"
csat_min_responses = 3
csat_credit_percent = 7.5
"""
BOTH = CHARGE + """
[sla]
fee = "300.00"
answer_rate = 0.9
max_ring_seconds = 5
credit_percent = 10
min_csat = "4.2"
csat_min_responses = 3
csat_credit_percent = 7.5
"""


def month(*ratings: tuple[int, int] | None, slow: int = 0) -> list[CallRecord]:
    """Seven handled calls (usage 7 x 1.25 = 8.7500), the first rated by `ratings` in turn;
    the last `slow` of them rang 6 s before the bot answered."""
    rated = list(ratings) + [None] * (7 - len(ratings))
    return [make_call(f"c{i}", 60, ring=6.0 if i > 7 - slow else 1.0, csat=rated[i - 1])
            for i in range(1, 8)]


def amounts(statement) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(line.kind, str(line.amount)) for line in statement.lines]


# Verdicts and credits

def test_met_when_the_mean_reaches_the_target() -> None:
    statement = build_statement(plan_from(CSAT_ONLY), "2026-11", month((5, 5), (4, 5), (4, 5)))
    (clause,) = statement.sla_clauses
    assert clause.met is True and clause.sample == 3
    assert clause.measured == D("4.333333")  # 13/3, shown half-up to 6 places
    assert amounts(statement) == [("usage", "8.7500"), ("sla_fee", "100.00")]
    assert statement.total == D("108.75")


def test_a_mean_exactly_on_the_target_is_met() -> None:
    statement = build_statement(plan_from(CSAT_ONLY), "2026-11",
                                month((5, 5), (4, 5), (4, 5), (4, 5), (4, 5)))
    (clause,) = statement.sla_clauses
    assert (clause.measured, clause.met) == (D("4.2"), True)  # 21/5


def test_missed_credits_its_percent_of_usage_rounded_half_up() -> None:
    statement = build_statement(plan_from(CSAT_ONLY), "2026-11", month((5, 5), (4, 5), (3, 5)))
    (clause,) = statement.sla_clauses
    assert (clause.measured, clause.sample, clause.met) == (D("4"), 3, False)
    # 7.5% of 8.7500 = 0.65625, half-up to the plan's precision: 0.6563
    assert clause.credit == D("-0.6563")
    assert amounts(statement) == [("usage", "8.7500"), ("sla_fee", "100.00"),
                                  ("sla_credit", "-0.6563")]
    credit = statement.lines[-1]
    assert credit.name == "SLA credit: satisfaction 4.00 < 4.2 of 5 (3 responses)"
    assert statement.total == D("108.09")  # 108.0937


def test_too_few_responses_are_not_judged() -> None:
    plan = plan_from(CSAT_ONLY)
    statement = build_statement(plan, "2026-11", month((1, 5), (1, 5)))  # 2 < 3 responses
    (clause,) = statement.sla_clauses
    assert (clause.measured, clause.sample, clause.met, clause.credit) == (D("1"), 2, None, None)
    assert amounts(statement) == [("usage", "8.7500"), ("sla_fee", "100.00")]
    assert statement.total == D("108.75")
    nobody = build_statement(plan, "2026-11", month()).sla_clauses[0]
    assert (nobody.measured, nobody.sample, nobody.met) == (None, 0, None)
    assert nobody.to_json() == {"clause": "csat", "measured": None, "target": "4.2",
                                "sample": 0, "met": None}


def test_the_default_minimum_is_one_response() -> None:
    plan = plan_from(CSAT_ONLY.replace("csat_min_responses = 3\n", ""))
    assert plan.sla is not None and plan.sla.csat_min_responses == 1
    (clause,) = build_statement(plan, "2026-11", month((4, 5))).sla_clauses
    assert (clause.met, clause.credit) == (False, D("-0.6563"))
    (nobody,) = build_statement(plan, "2026-11", month()).sla_clauses
    assert nobody.met is None  # no response at all: never judged


def test_responses_of_every_outcome_count_and_calls_outside_the_period_do_not() -> None:
    calls = month((5, 5), (5, 5))
    calls.append(make_call("c8", None, ring=8.0, outcome="abandoned", csat=(1, 5)))
    calls.append(make_call("c9", 60, end_ms=round(calls[0].ended_at * 1000) - 40 * 86_400_000,
                           csat=(1, 5)))  # ended in October
    (clause,) = build_statement(plan_from(CSAT_ONLY), "2026-11", calls).sla_clauses
    assert (clause.sample, clause.measured, clause.met) == (3, D("3.666666"), False)  # 11/3, cut to 6 places


def test_both_clauses_missed_give_two_credits() -> None:
    # 5 of 7 calls answered within 5 s (0.714285 < 0.9); satisfaction 4 < 4.2
    statement = build_statement(plan_from(BOTH), "2026-11",
                                month((5, 5), (4, 5), (3, 5), slow=2))
    assert amounts(statement) == [
        ("usage", "8.7500"), ("sla_fee", "300.00"),
        ("sla_credit", "-0.8750"),   # 10% of 8.7500
        ("sla_credit", "-0.6563"),   # 7.5% of 8.7500 = 0.65625, half-up
    ]
    assert statement.total == D("307.22")  # 307.2187
    assert statement.to_json() == {
        "plan_id": "test",
        "period": "2026-11",
        "currency": "CNY",
        "lines": [
            {"kind": "usage", "name": "Handled calls", "quantity": "7", "included": "0",
             "billed": "7", "amount": "8.7500"},
            {"kind": "sla_fee", "name": "SLA guarantee", "amount": "300.00"},
            {"kind": "sla_credit", "name": "SLA credit: answer rate 71.42% < 90% within 5 s",
             "amount": "-0.8750", "clause": "answer_rate", "measured": "0.714285",
             "target": "0.9", "sample": 7},
            {"kind": "sla_credit", "name": "SLA credit: satisfaction 4.00 < 4.2 of 5 (3 responses)",
             "amount": "-0.6563", "clause": "csat", "measured": "4", "target": "4.2",
             "sample": 3},
        ],
        "sla": [
            {"clause": "answer_rate", "measured": "0.714285", "target": "0.9", "sample": 7,
             "met": False},
            {"clause": "csat", "measured": "4", "target": "4.2", "sample": 3, "met": False},
        ],
        "total": "307.22",
    }


def test_one_clause_met_and_the_other_missed() -> None:
    statement = build_statement(plan_from(BOTH), "2026-11", month((5, 5), (5, 5), (2, 5)))
    assert amounts(statement) == [("usage", "8.7500"), ("sla_fee", "300.00"),
                                  ("sla_credit", "-0.6563")]
    assert [(c.clause, c.measured, c.met) for c in statement.sla_clauses] == [
        ("answer_rate", D("1"), True), ("csat", D("4"), False)]
    assert statement.total == D("308.09")  # 308.0937


def test_a_plan_with_only_the_satisfaction_clause() -> None:
    plan = plan_from(CSAT_ONLY)
    assert plan.sla is not None
    assert (plan.sla.answer_rate, plan.sla.max_ring_seconds, plan.sla.credit_percent) == (
        None, None, None)
    assert (plan.sla.min_csat, plan.sla.csat_min_responses, plan.sla.csat_credit_percent) == (
        D("4.2"), 3, D("7.5"))
    # every call rang too long: no answer-rate clause, so no answer-rate credit
    statement = build_statement(plan, "2026-11", month((5, 5), (5, 5), (5, 5), slow=7))
    assert statement.sla is None and statement.csat is not None
    assert [c.clause for c in statement.sla_clauses] == ["csat"]
    assert amounts(statement) == [("usage", "8.7500"), ("sla_fee", "100.00")]
    assert statement.to_json()["sla"] == [
        {"clause": "csat", "measured": "5", "target": "4.2", "sample": 3, "met": True}]


def test_a_plan_with_only_the_answer_rate_clause_is_as_before() -> None:
    plan = plan_from(BOTH.split("min_csat")[0])
    assert plan.sla is not None and plan.sla.min_csat is None
    statement = build_statement(plan, "2026-11", month((1, 5), (1, 5), (1, 5), slow=2))
    assert statement.csat is None
    assert amounts(statement) == [("usage", "8.7500"), ("sla_fee", "300.00"),
                                  ("sla_credit", "-0.8750")]
    assert [c.clause for c in statement.sla_clauses] == ["answer_rate"]


def test_no_sla_no_clauses() -> None:
    statement = build_statement(plan_from(CHARGE), "2026-11", month((1, 5)))
    assert statement.sla_clauses == () and statement.to_json()["sla"] == []


# Scales

def test_a_mixed_scale_month_is_averaged_on_the_five_point_scale() -> None:
    # 9/10 -> 1 + 8*4/9 = 41/9; 3/5 -> 3; 2/3 -> 1 + 1*4/2 = 3; mean (41/9 + 6)/3 = 95/27
    calls = month((9, 10), (3, 5), (2, 3))
    statement = build_statement(plan_from(CSAT_ONLY.replace('"4.2"', '"3.5"')), "2026-11", calls)
    (clause,) = statement.sla_clauses
    assert clause.measured == D("3.518518")  # 3.518518518..., cut (rounded down) to 6 places
    assert clause.met is True
    assert statement.csat is not None and statement.csat.shown() == "3.51"
    # the same month against 3.52: missed (95/27 < 3.52), credit 7.5% of 8.75
    missed = build_statement(plan_from(CSAT_ONLY.replace('"4.2"', '"3.52"')), "2026-11", calls)
    assert (missed.sla_clauses[0].met, missed.sla_clauses[0].credit) == (False, D("-0.6563"))
    assert missed.lines[-1].name == "SLA credit: satisfaction 3.51 < 3.52 of 5 (3 responses)"


def test_extremes_of_any_scale_map_to_one_and_five() -> None:
    calls = month((1, 2), (2, 2), (1, 10), (10, 10))
    (clause,) = build_statement(plan_from(CSAT_ONLY.replace('"4.2"', '"3"')), "2026-11",
                                calls).sla_clauses
    assert (clause.measured, clause.met) == (D("3"), True)  # (1 + 5 + 1 + 5) / 4


def test_the_mean_is_exact_not_a_sum_of_rounded_scores() -> None:
    # 6/7 -> 1 + 5*4/6 = 13/3 (on_five() gives 4.333...3 to 28 digits); with 1/2 -> 1 and
    # 2/2 -> 5 the mean is exactly (1 + 5 + 13) / 5 = 3.8, which meets "3.8", although the
    # mean of the rounded Decimal scores falls just short of it
    calls = month((1, 2), (2, 2), (6, 7), (6, 7), (6, 7))
    rounded = sum(c.csat.on_five() for c in calls if c.csat is not None) / 5
    assert rounded < D("3.8")
    (clause,) = build_statement(plan_from(CSAT_ONLY.replace('"4.2"', '"3.8"')), "2026-11",
                                calls).sla_clauses
    assert (clause.measured, clause.met) == (D("3.8"), True)


def test_a_rating_outside_its_scale_is_a_rating_error() -> None:
    from botmeter.rating import RatingError

    with pytest.raises(RatingError, match="c1"):
        build_statement(plan_from(CSAT_ONLY), "2026-11", month((6, 5)))


# Plan files

HEAD = """
[plan]
id = "p"
currency = "CNY"
timezone = "Asia/Shanghai"
[sla]
fee = "1"
"""
ANSWER = "answer_rate = 0.9\nmax_ring_seconds = 5\ncredit_percent = 1\n"
CSAT = 'min_csat = "4.2"\ncsat_credit_percent = 5\n'


@pytest.mark.parametrize(("body", "key", "reason"), [
    ("min_csat = 4.2\ncsat_credit_percent = 5\n", "sla.min_csat",
     'is a TOML float, which is inexact; write a quoted decimal string, e.g. min_csat = "4.2"'),
    ("min_csat = 4\ncsat_credit_percent = 5\n", "sla.min_csat", "quoted decimal string"),
    ('min_csat = "5.5"\ncsat_credit_percent = 5\n', "sla.min_csat", "between 1 and 5"),
    ('min_csat = "0.9"\ncsat_credit_percent = 5\n', "sla.min_csat", "between 1 and 5"),
    ('min_csat = "4.1234567"\ncsat_credit_percent = 5\n', "sla.min_csat",
     "7 decimal places: at most 6"),
    ('min_csat = "four"\ncsat_credit_percent = 5\n', "sla.min_csat", "not a decimal number"),
    ('min_csat = "4.2"\n', "sla.csat_credit_percent", "required with min_csat"),
    ("csat_credit_percent = 5\n", "sla.min_csat", "required with csat_credit_percent"),
    ("csat_min_responses = 30\n", "sla.min_csat", "required with csat_min_responses"),
    (CSAT + "csat_min_responses = 0\n", "sla.csat_min_responses", "at least 1"),
    (CSAT + 'csat_min_responses = "30"\n', "sla.csat_min_responses", "a TOML integer"),
    (CSAT + "csat_min_responses = 2.5\n", "sla.csat_min_responses", "a TOML integer"),
    (CSAT + "csat_min_responses = true\n", "sla.csat_min_responses", "a TOML integer"),
    ('min_csat = "4.2"\ncsat_credit_percent = 150\n', "sla.csat_credit_percent",
     "between 0 and 100"),
    ('min_csat = "4.2"\ncsat_credit_percent = -1\n', "sla.csat_credit_percent",
     "between 0 and 100"),
    (CSAT + "answer_rate = 0.9\nmax_ring_seconds = 5\n", "sla.credit_percent",
     "required with answer_rate"),
    (CSAT + "ignore_abandoned_under = 3\n", "sla.answer_rate",
     "required with ignore_abandoned_under"),
    (CSAT + "credit_percent = 10\n", "sla.answer_rate", "required with credit_percent"),
    ("", "sla", "a guarantee needs a clause"),
    (CSAT + "csat_min = 3\n", "sla.csat_min", "unknown key"),
])
def test_bad_sla_keys_are_refused_naming_the_key(tmp_path: Path, body: str, key: str,
                                                 reason: str) -> None:
    from botmeter.rating import load_plan

    path = tmp_path / "plan.toml"
    path.write_text(HEAD + body, encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize("body", [ANSWER, CSAT, ANSWER + CSAT, CSAT + "csat_min_responses = 30\n",
                                  'min_csat = "1"\ncsat_credit_percent = "0"\n',
                                  'min_csat = "5.000000"\ncsat_credit_percent = 100\n'])
def test_either_clause_alone_or_both_load(body: str) -> None:
    plan = plan_from(HEAD + body)
    assert plan.sla is not None
    assert plan.sla.has_answer_rate == ("answer_rate" in body)
    assert plan.sla.has_csat == ("min_csat" in body)


def test_the_demo_plan_has_both_clauses() -> None:
    sla = example("combined.toml").sla
    assert sla is not None and sla.answer_rate == D("0.98")
    assert (sla.min_csat, sla.csat_min_responses, sla.csat_credit_percent) == (
        D("4.0"), 5, D("5"))


# Comparing plans

def test_compare_shows_each_plans_clauses_and_keeps_both_credits_when_scaling() -> None:
    calls = month((5, 5), (4, 5), (3, 5), slow=2)
    result = compare_plans([plan_from(BOTH), example("per-call.toml")], "2026-11", calls,
                           active="test")
    data = {p["plan_id"]: p for p in result.to_json()["plans"]}
    assert data["test"]["sla"] == [
        {"clause": "answer_rate", "measured": "0.714285", "target": "0.9", "sample": 7,
         "met": False},
        {"clause": "csat", "measured": "4", "target": "4.2", "sample": 3, "met": False}]
    assert data["per-call"]["sla"] == []
    assert result.sla_rows() == [
        {"plan": "test", "clause": "answer rate", "measured": "0.714285", "target": "0.9",
         "sample": "7", "verdict": "missed"},
        {"plan": "test", "clause": "satisfaction", "measured": "4", "target": "4.2",
         "sample": "3", "verdict": "missed"}]
    # twice the volume: usage 17.50, both verdicts kept: 1.75 and 1.3125 credited
    from fractions import Fraction

    scaled = ScaledTotal(plan_from(BOTH), "2026-11", calls)
    assert scaled.total(Fraction(2)) == D("314.44")  # 17.50 + 300 - 1.75 - 1.3125 = 314.4375


def test_scaled_volume_scales_the_responses_too() -> None:
    from fractions import Fraction

    # 2 responses averaging 4 (< 4.2), 3 needed: not judged at this month's volume
    scaled = ScaledTotal(plan_from(CSAT_ONLY), "2026-11", month((5, 5), (3, 5)))
    assert scaled.total(Fraction(1)) == D("108.75")
    # 1.5 times the calls: 3 responses, judged and missed; usage 10.5 x 1.25 = 13.1250,
    # credit 7.5% = 0.984375 -> 0.9844; 113.125 - 0.9844 = 112.1406
    assert scaled.total(Fraction(3, 2)) == D("112.14")
    # twice: 4 responses; usage 17.50, credit 1.3125; 117.50 - 1.3125 = 116.1875
    assert scaled.total(Fraction(2)) == D("116.19")
    assert scaled.total(Fraction(2)) == build_statement(
        plan_from(CSAT_ONLY), "2026-11",
        month((5, 5), (3, 5)) + [c._replace(call_id=c.call_id + "b")
                                 for c in month((5, 5), (3, 5))]).total


# The real command

def store_month(write_config, plans: Path = PLANS_DIR) -> Path:  # type: ignore[no-untyped-def]
    """A config (active plan: combined) whose store holds a month of calls: 6 calls of 2
    minutes (inside the bundle), 2 of them transferred (usage 2 x 0.05 = 0.1000), one answered
    after 7 s; 5 ratings averaging (5 + 37/9 + 4 + 3 + 3) / 5 = 172/45 = 3.8222... < 4.0."""
    config = write_config(extra=f'\n[plans]\ndir = "{plans}"\nactive = "combined"\n')
    ratings = [(5, 5), (8, 10), (4, 5), (3, 5), (3, 5), None]  # 8/10 -> 1 + 7*4/9 = 37/9
    calls = [make_call(f"c{i}", 120, ring=7.0 if i == 6 else 1.0, csat=ratings[i - 1],
                       outcome="transferred" if i in (2, 3) else "handled")
             for i in range(1, 7)]
    store = CallStore(config.parent / "calls.db")
    try:
        store.save(calls)
    finally:
        store.close()
    return config


def botmeter(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "agent"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "botmeter.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_bill_shows_both_clauses(write_config) -> None:  # type: ignore[no-untyped-def]
    config = store_month(write_config)
    done = botmeter("--config", str(config), "bill", "--period", "2026-11", "--format", "json")
    assert done.returncode == 0, done.stderr
    statement = json.loads(done.stdout)
    # 5 of 6 calls answered within 5 s; the mean is 172/45 = 3.8222...
    assert statement["sla"] == [
        {"clause": "answer_rate", "measured": "0.833333", "target": "0.98", "sample": 6,
         "met": False},
        {"clause": "csat", "measured": "3.822222", "target": "4.0", "sample": 5, "met": False}]
    credits = [line for line in statement["lines"] if line["kind"] == "sla_credit"]
    # 10% and 5% of the usage amount, 0.1000
    assert [(c["clause"], c["amount"]) for c in credits] == [("answer_rate", "-0.0100"),
                                                             ("csat", "-0.0050")]
    assert statement["total"] == "17300.09"  # 17300.1000 - 0.0150 = 17300.085, half-up
    table = botmeter("--config", str(config), "bill", "--period", "2026-11")
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "SLA clauses" in out
    lines = out.splitlines()
    answer = next(line for line in lines if "answer rate" in line and "0.833333" in line)
    for shown in ("0.833333 (83.33%)", ">= 0.98 within 5 s", "6 counted calls",
                  "missed: credit -0.0100"):
        assert shown in answer, (shown, answer)
    satisfaction = next(line for line in lines if "satisfaction" in line and "3.822222" in line)
    for shown in ("3.822222 of 5", ">= 4.0 of 5", "5 responses", "missed: credit -0.0050"):
        assert shown in satisfaction, (shown, satisfaction)
    assert "5 of 6 counted calls answered in time (6 offered)" in out


def test_bill_table_shows_a_clause_not_judged(write_config, tmp_path: Path,  # type: ignore[no-untyped-def]
                                              ) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    text = (PLANS_DIR / "combined.toml").read_text(encoding="utf-8")
    (plans / "combined.toml").write_text(
        text.replace("csat_min_responses = 5", "csat_min_responses = 30"), encoding="utf-8")
    config = store_month(write_config, plans)
    done = botmeter("--config", str(config), "bill", "--period", "2026-11", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sla"][1] == {
        "clause": "csat", "measured": "3.822222", "target": "4.0", "sample": 5, "met": None}
    table = botmeter("--config", str(config), "bill", "--period", "2026-11").stdout
    satisfaction = next(line for line in table.splitlines() if "3.822222" in line)
    assert "5 responses (fewer than 30)" in satisfaction and "not judged" in satisfaction


def test_plans_compare_shows_the_clauses(write_config) -> None:  # type: ignore[no-untyped-def]
    config = store_month(write_config)
    files = [str(PLANS_DIR / "per-call.toml")]
    done = botmeter("--config", str(config), "plans", "compare", "--period", "2026-11",
                    "--format", "json", *files)
    assert done.returncode == 0, done.stderr
    plans = {p["plan_id"]: p["sla"] for p in json.loads(done.stdout)["plans"]}
    assert plans["per-call"] == []
    assert [(c["clause"], c["met"]) for c in plans["combined"]] == [("answer_rate", False),
                                                                  ("csat", False)]
    table = botmeter("--config", str(config), "plans", "compare", "--period", "2026-11", *files)
    assert table.returncode == 0, table.stderr
    assert "SLA clauses of each plan" in table.stdout
    assert any("combined" in line and "satisfaction" in line and "3.822222" in line
               and "missed" in line for line in table.stdout.splitlines())


def test_a_missed_clause_with_no_usage_credits_zero() -> None:
    # inside the bundle the usage amount is 0: the missed clause's credit line is 0.0000
    calls = [make_call(f"c{i}", 120, csat=(1, 5)) for i in range(1, 6)]
    statement = build_statement(example("combined.toml"), "2026-11", calls)
    assert [(c.clause, c.met) for c in statement.sla_clauses] == [("answer_rate", True),
                                                                  ("csat", False)]
    assert (statement.lines[-1].clause, statement.lines[-1].amount) == ("csat", D("0.0000"))
