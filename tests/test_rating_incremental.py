"""Incremental rating: one call at a time equals rating the period at once."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botmeter.rating import PeriodState, PlanVersion, Rater, RatingError, RerateNeeded, rate_calls
from tests.rating_support import (
    BASE_MS,
    HOUR_MS,
    call_lists,
    example,
    local_ms,
    make_call,
    plans,
)


def test_in_order_calls_rate_one_by_one() -> None:
    plan = example("combined.toml")
    calls = [make_call(f"c{i}", 30 + i, outcome="transferred" if i % 3 else "handled")
             for i in range(1, 40)]
    rater = Rater(plan)
    with pytest.raises(RerateNeeded) as caught:
        rater.rate(calls[0])
    assert caught.value.period == "2026-11"
    assert rater.rerate("2026-11", []) == {}
    one_by_one = {c.call_id: rater.rate(c) for c in calls}
    assert one_by_one == rate_calls(calls, plan)


def test_a_late_call_needs_a_rerate_that_equals_rating_all() -> None:
    plan = example("bundle.toml")
    calls = [make_call(f"c{i}", 2_000 * 60 * (i % 2) + 30) for i in range(1, 8)]
    rater = Rater(plan)
    rater.rerate("2026-11", calls[:3])
    for call in calls[4:]:
        rater.rate(call)
    with pytest.raises(RerateNeeded, match="out of order"):
        rater.rate(calls[3])
    with pytest.raises(RerateNeeded, match="out of order"):
        rater.rate(calls[-1])  # the same call again
    assert rater.rerate("2026-11", calls) == rate_calls(calls, plan)
    later = make_call("c9", 600)
    assert rater.rate(later) == rate_calls([*calls, later], plan)["c9"]


def test_each_period_and_version_has_its_own_state() -> None:
    plan = example("per-minute.toml")
    rater = Rater(plan)
    december = make_call("d1", 61, end_ms=local_ms(2026, 12, 1, 0, 0, 1))
    rater.rerate("2026-11", [])
    rater.rate(make_call("c1", 61))
    with pytest.raises(RerateNeeded) as caught:
        rater.rate(december)
    assert caught.value.period == "2026-12"
    assert rater.rerate("2026-12", [december, make_call("c2", 61)]).keys() == {"d1"}
    rater.rate(make_call("c3", 61))  # November's state survived December's rerate


def test_period_state_refuses_calls_out_of_order() -> None:
    state = PeriodState(example("per-call.toml"), "2026-11")
    state.add(make_call("c2"))
    with pytest.raises(RerateNeeded):
        state.add(make_call("c1"))
    assert state.calls == 1


def test_duplicate_call_ids_are_refused() -> None:
    with pytest.raises(RatingError, match="duplicate"):
        rate_calls([make_call("c1"), make_call("c1", end_ms=BASE_MS + 5)], example("per-call.toml"))


def test_module_quantities_finer_than_a_millionth_are_refused() -> None:
    call = make_call("c1", modules={"asr": "0.0000001"})
    with pytest.raises(RatingError, match="asr"):
        rate_calls([call], example("per-module.toml"))


@settings(max_examples=100, deadline=None)
@given(plans(), call_lists(span_ms=40 * 24 * HOUR_MS), st.randoms(use_true_random=False))
def test_any_arrival_order_with_rerates_matches_batch(plan: PlanVersion, calls: list,
                                                      rnd: random.Random) -> None:
    arrivals = calls[:]
    rnd.shuffle(arrivals)
    rater = Rater(plan)
    stored: dict = {}
    seen: list = []
    for call in arrivals:
        seen.append(call)
        try:
            stored[call.call_id] = rater.rate(call)
        except RerateNeeded as needed:
            period = needed.period
            stored.update(rater.rerate(period, seen))
    assert stored == rate_calls(calls, plan)
