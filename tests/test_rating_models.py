"""Hand-computed tables for every pricing model (Semantics 1-3)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from botmeter.rating import build_statement, rate_calls
from tests.rating_support import PLAN_HEAD, D, example, make_call, plan_from


def amounts(calls, plan) -> list[str]:
    rated = rate_calls(calls, plan)
    return [str(rated[c.call_id].amount) for c in calls]


@pytest.mark.parametrize(("seconds", "amount", "metered"), [
    (2, "0.0000", "0"), (3, "0.1200", "60"), (61, "0.1320", "66"), (125, "0.2520", "126"),
    (60, "0.1200", "60"), (60.001, "0.1320", "66"), (2.999, "0.0000", "0"), (0, "0.0000", "0"),
])
def test_worked_check_per_minute(seconds: float, amount: str, metered: str) -> None:
    plan = example("per-minute.toml")
    rated = rate_calls([make_call("c1", seconds)], plan)["c1"]
    assert str(rated.amount) == amount
    assert rated.lines[0].charge == "Bot minutes"
    assert rated.lines[0].metered == Decimal(metered)
    assert (rated.plan_id, rated.currency) == ("per-minute", "CNY")


def test_worked_check_as_one_period() -> None:
    calls = [make_call(f"c{i}", s) for i, s in enumerate([2, 3, 61, 125], 1)]
    assert amounts(calls, example("per-minute.toml")) == ["0.0000", "0.1200", "0.1320", "0.2520"]
    line = build_statement(example("per-minute.toml"), "2026-11", calls).lines[0]
    assert (line.quantity, line.billed, line.amount) == (D("4.2"), D("4.2"), D("0.5040"))


def test_outcomes_filter_and_unanswered_calls() -> None:
    calls = [make_call("c1", 61, outcome="transferred"), make_call("c2", None, outcome="abandoned"),
             make_call("c3", 61, outcome="failed")]
    only_handled = plan_from("""
[[charge]]
name = "m"
metric = "bot_seconds"
outcomes = ["handled"]
price = "1"
""")
    assert amounts(calls, example("per-minute.toml")) == ["0.1320", "0.0000", "0.1320"]
    assert amounts(calls, only_handled) == ["0.0000", "0.0000", "0.0000"]


def test_call_seconds_include_the_human_part() -> None:
    plan = plan_from("""
[[charge]]
name = "Call minutes"
metric = "call_seconds"
first_block = 60
block = 60
unit = 60
price = "0.20"
""")
    call = make_call("c1", 30, after_bot=45, outcome="transferred")  # 75 s answered -> 120 s
    assert amounts([call], plan) == ["0.4000"]


def test_per_second_prices_round_at_the_margin() -> None:
    plan = plan_from("""
[[charge]]
name = "Seconds"
metric = "bot_seconds"
unit = 60
price = "0.10"
""")
    # 1 s = 0.001666...: C(1) = 0.0017, C(2) = 0.0033, C(3) = 0.0050
    calls = [make_call(f"c{i}", 1) for i in (1, 2, 3)]
    assert amounts(calls, plan) == ["0.0017", "0.0016", "0.0017"]
    assert build_statement(plan, "2026-11", calls).lines[0].amount == D("0.0050")


def test_half_up_rounding_of_the_cumulative_cost() -> None:
    plan = plan_from("""
[[charge]]
name = "Calls"
metric = "calls"
price = "0.00005"
""")
    calls = [make_call(f"c{i}") for i in (1, 2, 3)]
    # C = 0.00005, 0.00010, 0.00015 -> rounded 0.0001, 0.0001, 0.0002
    assert amounts(calls, plan) == ["0.0001", "0.0000", "0.0001"]


def test_per_call() -> None:
    calls = [make_call("c1", 5), make_call("c2", 500, outcome="transferred"),
             make_call("c3", None, outcome="abandoned")]
    assert amounts(calls, example("per-call.toml")) == ["0.3500", "0.3500", "0.0000"]


def test_allowance_runs_out_in_the_middle_of_a_call() -> None:
    plan = plan_from("""
[[charge]]
name = "Bot minutes"
metric = "bot_seconds"
first_block = 60
block = 6
unit = 60
included = 2
price = "0.10"
""")
    calls = [make_call("c1", 90), make_call("c2", 120), make_call("c3", 30)]
    # 1.5 min (free) | 2 min of which 0.5 free, 1.5 billed | 1 min billed
    assert amounts(calls, plan) == ["0.0000", "0.1500", "0.1000"]
    line = build_statement(plan, "2026-11", calls).lines[0]
    assert (line.quantity, line.included, line.billed, line.amount) == (
        D("4.5"), D("2"), D("2.5"), D("0.2500"))


def test_bundle_example_counts_minutes_then_overage() -> None:
    plan = example("bundle.toml")
    calls = [make_call("c1", 4_999 * 60), make_call("c2", 180)]  # 4,999 min, then 3 min
    assert amounts(calls, plan) == ["0.0000", "0.2000"]


def test_graduated_tier_boundary_inside_a_call() -> None:
    plan = plan_from("""
[[charge]]
name = "Bot minutes"
metric = "bot_seconds"
first_block = 60
block = 6
unit = 60
model = "graduated"
tiers = [ { up_to = 2, price = "0.12" }, { price = "0.10" } ]
""")
    calls = [make_call("c1", 90), make_call("c2", 120), make_call("c3", 60)]
    # c2: 0.5 min at 0.12 + 1.5 min at 0.10 = 0.06 + 0.15
    assert amounts(calls, plan) == ["0.1800", "0.2100", "0.1000"]


def test_graduated_after_allowance_and_three_tiers() -> None:
    plan = plan_from("""
[[charge]]
name = "Calls"
metric = "calls"
included = 1
model = "graduated"
tiers = [ { up_to = 1, price = "1.00" }, { up_to = 3, price = "0.50" }, { price = "0.25" } ]
""")
    calls = [make_call(f"c{i}") for i in range(1, 7)]
    assert amounts(calls, plan) == ["0.0000", "1.0000", "0.5000", "0.5000", "0.2500", "0.2500"]


def test_volume_tier_change_makes_a_marginal_amount_negative() -> None:
    plan = plan_from("""
[[charge]]
name = "Calls"
metric = "calls"
model = "volume"
tiers = [ { up_to = 2, price = "0.40" }, { price = "0.10" } ]
""")
    calls = [make_call(f"c{i}") for i in range(1, 5)]
    # C = 0.40, 0.80, 0.30 (all 3 at 0.10), 0.40
    assert amounts(calls, plan) == ["0.4000", "0.4000", "-0.5000", "0.1000"]
    assert build_statement(plan, "2026-11", calls).lines[0].amount == D("0.4000")


def test_volume_example_reprices_the_month() -> None:
    plan = example("volume.toml")
    calls = [make_call(f"c{i}", end_ms=None) for i in range(1, 3)]
    assert amounts(calls, plan) == ["0.4000", "0.4000"]


def test_package_rounding() -> None:
    plan = example("per-module.toml")  # TTS: packages of 10,000 characters at 2.00
    calls = [make_call("c1", modules={"tts": 3000}), make_call("c2", modules={"tts": 6000}),
             make_call("c3", modules={"tts": 1000}), make_call("c4", modules={"tts": 1})]
    rated = rate_calls(calls, plan)
    tts = [str(rated[c.call_id].lines[2].amount) for c in calls]
    assert tts == ["2.0000", "0.0000", "0.0000", "2.0000"]  # 3k, 9k, 10k (full), 10,001


def test_per_module_units_and_allowance() -> None:
    plan = example("per-module.toml")
    calls = [make_call("c1", modules={"asr": "90.5", "nlu": 9999, "qa": 3}),
             make_call("c2", modules={"asr": 30, "nlu": 3}),
             make_call("c3", None, outcome="abandoned", modules={"qa": 1, "asr": 10})]
    rated = rate_calls(calls, plan)
    table = [[str(line.amount) for line in rated[c.call_id].lines] for c in calls]
    assert table == [
        ["0.0905", "0.0000", "0.0000", "0.0600"],  # 90.5 s ASR at 0.06/min; NLU within 10k
        ["0.0300", "0.0030", "0.0000", "0.0000"],  # 10,002 requests: 2 over at 1.50/1000
        ["0.0000", "0.0000", "0.0000", "0.0200"],  # abandoned: only Q&A counts it
    ]
    assert rated["c1"].amount == D("0.1505")
    assert rated["c1"].lines[0].metered == D("90.5")


def test_exact_half_up_when_units_do_not_terminate() -> None:
    """29 s at 0.00153 a minute is exactly 0.0007395: half-up gives 0.000740 (a Decimal context
    of limited precision would see 0.00073949999... and round down)."""
    plan = plan_from(PLAN_HEAD + """precision = "0.000001"

[[charge]]
name = "Seconds"
metric = "bot_seconds"
unit = 60
price = "0.00153"
""")
    assert amounts([make_call("c1", 28.001)], plan) == ["0.000740"]
