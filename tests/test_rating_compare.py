"""Comparing plans side by side, and break-even volumes."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings

from botmeter.rating import PlanVersion, build_statement, compare_plans
from botmeter.rating.compare import ScaledTotal
from tests.rating_support import D, call_lists, example, make_call, plans


@pytest.fixture(scope="module")
def thousand_calls() -> list:
    return [make_call(f"c{i}", 120) for i in range(1, 1001)]  # 2,000 bot minutes


def test_plans_side_by_side_cheapest_first(thousand_calls: list) -> None:
    chosen = [example("bundle.toml"), example("per-minute.toml"), example("per-call.toml")]
    result = compare_plans(chosen, "2026-11", thousand_calls, active="bundle-5000")
    assert [(p.plan_id, p.total, p.difference) for p in result.plans] == [
        ("per-minute", D("240.00"), D("-210.00")),
        ("per-call", D("350.00"), D("-100.00")),
        ("bundle-5000", D("450.00"), D("0.00")),
    ]
    assert result.rows()[0] == {"plan": "per-minute", "name": "Per minute, 60/6 blocks",
                                "total": "240.00", "vs_active": "-210.00", "active": ""}
    assert result.rows()[2]["active"] == "*"
    pairs = {(b.plan_a, b.plan_b): b for b in result.break_even}
    bundle_minute = pairs["bundle-5000", "per-minute"]
    assert (bundle_minute.multiple, bundle_minute.calls) == (D("1.8750"), 1875)  # 240k = 450
    assert (bundle_minute.cheaper_below, bundle_minute.cheaper_above) == ("per-minute",
                                                                          "bundle-5000")
    bundle_call = pairs["bundle-5000", "per-call"]
    assert (bundle_call.multiple, bundle_call.calls) == (D("1.2857"), 1286)  # 350k = 450
    never = pairs["per-minute", "per-call"]
    assert never.multiple is None and never.calls is None
    assert never.cheaper_below == never.cheaper_above == "per-minute"
    data = result.to_json()
    assert data["plans"][0] == {"plan_id": "per-minute", "name": "Per minute, 60/6 blocks",
                                "total": "240.00", "difference": "-210.00", "active": False,
                                "sla": []}
    assert data["break_even"][0] == {"plans": ["bundle-5000", "per-minute"], "multiple": "1.8750",
                                     "calls": 1875, "cheaper_below": "per-minute",
                                     "cheaper_above": "bundle-5000"}
    assert result.break_even_rows()[2]["multiple"] == "never"


def test_break_even_past_an_allowance(thousand_calls: list) -> None:
    # bundle: 450 + 0.10/min above 5,000 min; a cheaper-per-minute plan with a higher fee
    other = dataclasses.replace(example("bundle.toml"), plan_id="big")
    other = dataclasses.replace(other, charges=(dataclasses.replace(
        other.charges[0], included=Decimal(0), price=Decimal("0.05")),),
        fees=(dataclasses.replace(other.fees[0], amount=Decimal("600.00")),))
    result = compare_plans([example("bundle.toml"), other], "2026-11", thousand_calls)
    (pair,) = result.break_even
    # 450 + 0.10 (2000k - 5000) = 600 + 0.05 * 2000k  ->  100k = 650  ->  k = 6.5
    assert (pair.multiple, pair.calls) == (D("6.5000"), 6500)
    assert result.active is None and all(p.difference is None for p in result.plans)


def test_currencies_must_match(thousand_calls: list) -> None:
    usd = dataclasses.replace(example("per-call.toml"), plan_id="usd", currency="USD")
    with pytest.raises(ValueError, match="currencies"):
        compare_plans([example("per-call.toml"), usd], "2026-11", thousand_calls)


@settings(max_examples=80, deadline=None)
@given(plans(), call_lists())
def test_scaled_totals_match_statements(plan: PlanVersion, calls: list) -> None:
    plan = dataclasses.replace(plan, sla=example("combined.toml").sla)
    priced = ScaledTotal(plan, "2026-11", calls)
    assert priced.total(Fraction(1)) == build_statement(plan, "2026-11", calls).total
    doubled = calls + [c._replace(call_id=c.call_id + "b") for c in calls]
    assert priced.total(Fraction(2)) == build_statement(plan, "2026-11", doubled).total
