"""Statements (Semantics 4-5), periods in the plan's time zone, and plan versions."""

from __future__ import annotations

from decimal import Decimal

from botmeter.rating import (
    PlanBook,
    PlanSeries,
    build_statement,
    period_bounds,
    period_of,
    rate_calls,
)
from tests.rating_support import SHANGHAI, D, example, local_ms, make_call, plan_from

SLA_PLAN = """
[[charge]]
name = "Handled calls"
metric = "calls"
outcomes = ["handled"]
price = "1.00"

[sla]
fee = "300.00"
answer_rate = 0.98
max_ring_seconds = 5
ignore_abandoned_under = 3
credit_percent = 10
"""


def sla_calls(extra_abandoned_ring: float | None) -> list:
    calls = [make_call(f"c{i}", 30, ring=1.0) for i in range(1, 50)]
    calls.append(make_call("c50", 30, ring=6.0))  # answered, but too late
    calls += [make_call(f"c{i}", None, ring=2.0, outcome="abandoned") for i in (51, 52, 53)]
    if extra_abandoned_ring is not None:
        calls.append(make_call("c54", None, ring=extra_abandoned_ring, outcome="abandoned"))
    return calls


def test_sla_met() -> None:
    statement = build_statement(plan_from(SLA_PLAN), "2026-11", sla_calls(None))
    assert statement.sla is not None
    assert (statement.sla.offered, statement.sla.counted, statement.sla.answered) == (53, 50, 49)
    assert statement.sla.met  # 49 / 50 = 0.98, exactly the guarantee
    assert [(line.kind, str(line.amount)) for line in statement.lines] == [
        ("usage", "50.0000"), ("sla_fee", "300.00")]
    assert statement.total == D("350.00")


def test_sla_missed_credits_a_share_of_usage() -> None:
    statement = build_statement(plan_from(SLA_PLAN), "2026-11", sla_calls(4.0))
    assert statement.sla is not None and not statement.sla.met  # 49 / 51 = 96.07%
    credit = statement.lines[-1]
    assert credit.kind == "sla_credit"
    assert credit.amount == D("-5.0000")
    assert "96.07%" in credit.name and "98%" in credit.name
    assert statement.total == D("345.00")


def test_sla_with_no_counted_calls_is_met() -> None:
    statement = build_statement(plan_from(SLA_PLAN), "2026-11",
                                [make_call("c1", None, ring=1, outcome="abandoned")])
    assert statement.sla is not None and statement.sla.met and statement.sla.answer_rate is None


def test_once_fee_only_in_its_period() -> None:
    plan = example("combined.toml")  # from 2026-11-01; customisation on 2026-11-15
    names = {p: [line.name for line in build_statement(plan, p, []).lines if line.kind == "fee"]
             for p in ("2026-11", "2026-12", "2027-01")}
    assert names["2026-11"] == ["Platform", "Customisation (dialogue design)"]
    assert names["2026-12"] == names["2027-01"] == ["Platform"]
    assert build_statement(plan, "2026-11", []).total == D("17300.00")
    assert build_statement(plan, "2026-12", []).total == D("2300.00")


def test_period_boundary_in_the_plans_time_zone() -> None:
    november = local_ms(2026, 11, 30, 23, 59, 59)
    december = local_ms(2026, 12, 1, 0, 0, 0)
    assert period_of(november / 1000, SHANGHAI) == "2026-11"
    assert period_of(december / 1000, SHANGHAI) == "2026-12"
    assert period_of((december - 1) / 1000, SHANGHAI) == "2026-11"
    assert period_bounds("2026-12", SHANGHAI)[0] == december / 1000
    calls = [make_call("late-nov", 61, end_ms=november), make_call("early-dec", 61, end_ms=december)]
    plan = plan_from("""
[[charge]]
name = "Calls"
metric = "calls"
included = 1
price = "1.00"
""")
    # each call is the first of its period, so each uses that period's allowance
    assert {k: str(v.amount) for k, v in rate_calls(calls, plan).items()} == {
        "late-nov": "0.0000", "early-dec": "0.0000"}
    assert build_statement(plan, "2026-11", calls).calls == 1
    assert build_statement(plan, "2026-12", calls).calls == 1
    # the same instants are both in November in UTC
    utc = plan_from("""
[plan]
id = "utc"
currency = "CNY"
timezone = "UTC"
[[charge]]
name = "Calls"
metric = "calls"
price = "1.00"
""")
    assert build_statement(utc, "2026-11", calls).calls == 2


def versions() -> PlanSeries:
    text = """
[plan]
id = "minutes"
currency = "CNY"
timezone = "Asia/Shanghai"
effective_from = "{day}"
[[charge]]
name = "Bot minutes"
metric = "bot_seconds"
unit = 60
included = {included}
price = "{price}"
[[fee]]
name = "Platform"
amount = "{fee}"
"""
    old = plan_from(text.format(day="2026-01-01", price="0.12", included=0, fee="100.00"), "a.toml")
    new = plan_from(text.format(day="2026-11-15", price="0.10", included=1, fee="200.00"), "b.toml")
    return PlanBook([new, old]).series("minutes")


def test_version_selection_by_effective_from() -> None:
    series = versions()
    before = local_ms(2026, 11, 14, 23, 59, 59) / 1000
    on = local_ms(2026, 11, 15) / 1000
    assert series.version_index(before) == 0
    assert series.version_index(on) == 1
    assert series.version_index(local_ms(2026, 1, 1) / 1000) == 0
    assert series.version_index(local_ms(2026, 1, 1) / 1000 - 0.001) is None  # before the plan
    # the offered_at date decides, not the end: offered just before midnight, ended after
    call = make_call("c1", 120, offered_ms=round(before * 1000) - 1000,
                     end_ms=local_ms(2026, 11, 15, 0, 2))
    assert str(rate_calls([call], series)["c1"].amount) == "0.2400"


def test_a_period_spanning_two_versions_rates_each_with_its_own_allowance() -> None:
    series = versions()
    calls = [make_call("a1", 120, end_ms=local_ms(2026, 11, 10)),
             make_call("b1", 120, end_ms=local_ms(2026, 11, 20)),
             make_call("b2", 120, end_ms=local_ms(2026, 11, 21))]
    rated = rate_calls(calls, series)
    assert [str(rated[c].amount) for c in ("a1", "b1", "b2")] == ["0.2400", "0.1000", "0.2000"]
    statement = build_statement(series, "2026-11", calls)
    assert [(line.name, str(line.amount)) for line in statement.lines] == [
        ("Bot minutes (minutes@2026-01-01)", "0.2400"),
        ("Bot minutes (minutes@2026-11-15)", "0.3000"),
        ("Platform", "100.00"),  # period fees: the version in force on November 1st
    ]
    assert statement.total == D("100.54")
    assert [line.amount for line in build_statement(series, "2026-12", []).lines] == [
        D("0.0000"), D("200.00")]


def test_statement_json() -> None:
    plan = example("combined.toml")
    calls = [make_call("c1", 5_000 * 60 + 90, outcome="transferred"), make_call("c2", 61)]
    assert build_statement(plan, "2026-11", calls).to_json() == {
        "plan_id": "combined",
        "period": "2026-11",
        "currency": "CNY",
        "lines": [
            {"kind": "usage", "name": "Bot minutes", "quantity": "5002.6", "included": "5000",
             "billed": "2.6", "amount": "0.2600"},
            {"kind": "usage", "name": "Transfers to agents", "quantity": "1", "included": "0",
             "billed": "1", "amount": "0.0500"},
            {"kind": "fee", "name": "Platform", "amount": "2000.00"},
            {"kind": "fee", "name": "Customisation (dialogue design)", "amount": "15000.00"},
            {"kind": "sla_fee", "name": "SLA guarantee", "amount": "300.00"},
        ],
        # both clauses, whatever their verdict: no rating this month, so csat is not judged
        "sla": [
            {"clause": "answer_rate", "measured": "1", "target": "0.98", "sample": 2, "met": True},
            {"clause": "csat", "measured": None, "target": "4.0", "sample": 0, "met": None},
        ],
        "total": "17300.31",
    }


def test_total_rounds_once_to_the_minor_unit() -> None:
    yen = plan_from("""
[plan]
id = "yen"
currency = "JPY"
timezone = "Asia/Tokyo"
precision = "0.01"
[[charge]]
name = "Calls"
metric = "calls"
price = "0.5"
[[fee]]
name = "Base"
amount = "0.25"
""")
    calls = [make_call(f"c{i}") for i in (1, 2, 3)]
    statement = build_statement(yen, "2026-11", calls)
    assert [str(line.amount) for line in statement.lines] == ["1.50", "0.25"]
    assert statement.to_json()["total"] == "2"  # 1.75 rounded half-up once
    assert statement.total == Decimal("2")


def test_non_terminating_quantities_show_six_places() -> None:
    plan = plan_from("""
[[charge]]
name = "Seconds"
metric = "bot_seconds"
unit = 60
price = "0.10"
""")
    line = build_statement(plan, "2026-11", [make_call("c1", 1)]).lines[0]
    assert line.to_json()["quantity"] == "0.016667"


def test_sla_thresholds_are_exact_to_the_millisecond() -> None:
    plan = plan_from(SLA_PLAN)
    calls = [make_call("c1", 30, ring=5.0), make_call("c2", 30, ring=5.001),
             make_call("c3", None, ring=3.0, outcome="abandoned"),
             make_call("c4", None, ring=2.999, outcome="abandoned")]
    measure = build_statement(plan, "2026-11", calls).sla
    assert measure is not None
    assert (measure.offered, measure.counted, measure.answered) == (4, 3, 1)


def test_sla_credit_line_json_says_what_was_measured() -> None:
    statement = build_statement(plan_from(SLA_PLAN), "2026-11", sla_calls(4.0))
    # 49 of 51 counted calls answered within 5 s: 0.96078431..., shown to 6 places
    assert statement.to_json()["lines"][-1] == {
        "kind": "sla_credit", "name": "SLA credit: answer rate 96.07% < 98% within 5 s",
        "amount": "-5.0000", "clause": "answer_rate", "measured": "0.960784", "target": "0.98",
        "sample": 51}
