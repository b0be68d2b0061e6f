"""Properties: the integer engine equals the plain Decimal reference; per-call amounts add up;
order does not matter; amounts never fall as a call grows."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botmeter.rating import PlanVersion, build_statement, period_of, rate_calls
from botmeter.tracking.record import CallRecord
from tests.rating_reference import reference_amounts
from tests.rating_support import HOUR_MS, SHANGHAI, call_lists, make_call, plans

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(plans(), call_lists())
def test_integer_engine_equals_the_decimal_reference(plan: PlanVersion, calls: list) -> None:
    rated = rate_calls(calls, plan)
    expected = reference_amounts(calls, plan)
    for call in calls:
        assert [line.amount for line in rated[call.call_id].lines] == expected[call.call_id]


@SETTINGS
@given(plans(), call_lists())
def test_per_call_amounts_add_up_to_the_usage_lines(plan: PlanVersion, calls: list) -> None:
    rated = rate_calls(calls, plan)
    statement = build_statement(plan, "2026-11", calls)
    usage = [line for line in statement.lines if line.kind == "usage"]
    for index, line in enumerate(usage):
        assert sum((r.lines[index].amount for r in rated.values()), Decimal(0)) == line.amount
    for result in rated.values():
        assert result.amount == sum((line.amount for line in result.lines), Decimal(0))
    assert statement.usage_amount == sum((r.amount for r in rated.values()), Decimal(0))


@SETTINGS
@given(plans(), call_lists(span_ms=75 * 24 * HOUR_MS), st.randoms(use_true_random=False))
def test_totals_do_not_depend_on_arrival_order(plan: PlanVersion, calls: list,
                                               rnd: random.Random) -> None:
    shuffled = calls[:]
    rnd.shuffle(shuffled)
    assert rate_calls(shuffled, plan) == rate_calls(calls, plan)
    for period in ("2026-11", "2026-12", "2027-01"):
        assert build_statement(plan, period, shuffled) == build_statement(plan, period, calls)


@SETTINGS
@given(plans(), call_lists(span_ms=75 * 24 * HOUR_MS))
def test_each_period_starts_afresh(plan: PlanVersion, calls: list) -> None:
    rated = rate_calls(calls, plan)
    periods: dict[str, list[CallRecord]] = {}
    for call in calls:
        periods.setdefault(period_of(call.ended_at, SHANGHAI), []).append(call)
    for period, mine in periods.items():
        assert rate_calls(mine, plan) == {c.call_id: rated[c.call_id] for c in mine}
        statement = build_statement(plan, period, calls)
        assert statement.calls == len(mine)
        assert statement.usage_amount == sum((rated[c.call_id].amount for c in mine), Decimal(0))


@SETTINGS
@given(plans(models=("per_unit", "graduated", "package"), metrics=("bot_seconds",)),
       call_lists(), st.data())
def test_an_amount_never_falls_when_its_seconds_grow(plan: PlanVersion, calls: list,
                                                     data: st.DataObject) -> None:
    answered = [c for c in calls if c.bot_answered_at is not None]
    if not answered:
        return
    call = data.draw(st.sampled_from(answered))
    extra = data.draw(st.integers(1, 200_000)) / 1000
    grown = make_call(call.call_id, (call.bot_seconds or 0) + extra,
                      end_ms=round(call.ended_at * 1000), outcome=call.outcome)
    before = rate_calls(calls, plan)[call.call_id].amount
    after = rate_calls([grown if c is call else c for c in calls], plan)[call.call_id].amount
    assert after >= before
