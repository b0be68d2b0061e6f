"""Semantics 6 of the plan contract: versions, once fees, and what comes before a plan starts.

Every amount here is worked out by hand in the comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from botmeter.rating import (
    NoStatement,
    NotRated,
    PlanBook,
    PlanSeries,
    PlanVersion,
    Rater,
    build_statement,
    compare_plans,
    load_plan,
    rate_calls,
)
from botmeter.tracking.record import CallRecord
from tests.rating_support import D, local_ms, make_call, plan_from

VERSION = """
[plan]
id = "calls"
currency = "CNY"
timezone = "Asia/Shanghai"
{effective_from}
[[charge]]
name = "Calls"
metric = "calls"
included = 1
price = "{price}"
[[fee]]
name = "Platform"
amount = "{platform}"
{fees}
"""


def version(day: str | None, price: str = "1.00", platform: str = "100.00", fees: str = "",
            source: str | None = None) -> PlanVersion:
    when = f'effective_from = "{day}"' if day else ""
    return plan_from(VERSION.format(effective_from=when, price=price, platform=platform,
                                    fees=fees), source or f"{day or 'undated'}.toml")


def once(name: str, amount: str, on: str) -> str:
    return f'[[fee]]\nname = "{name}"\namount = "{amount}"\nevery = "once"\non = "{on}"\n'


def series(*versions: PlanVersion) -> PlanSeries:
    return PlanBook(versions).series("calls")


Moment = tuple[int, int, int, int] | tuple[int, int, int, int, int] | tuple[
    int, int, int, int, int, int]


def call(call_id: str, offered: Moment, ended: Moment) -> CallRecord:
    return make_call(call_id, 30, offered_ms=local_ms(*offered), end_ms=local_ms(*ended))


# A call offered before the first version is not rated, and uses none of the allowance

#: the plan starts on 2026-11-15: 1 call a month included, then 1.00 a call
STARTS_MID_NOVEMBER = version("2026-11-15")
EARLY = call("early", (2026, 11, 14, 23, 59, 50), (2026, 11, 15, 0, 3))  # offered the day before
FIRST = call("first", (2026, 11, 16, 9), (2026, 11, 16, 9, 2))
SECOND = call("second", (2026, 11, 17, 9), (2026, 11, 17, 9, 2))


def test_a_call_offered_before_the_plan_starts_is_not_rated() -> None:
    rated = rate_calls([EARLY, FIRST, SECOND], STARTS_MID_NOVEMBER)
    # "early" has no amount; "first" takes the one included call, "second" pays 1.00
    assert {k: str(v.amount) for k, v in rated.items()} == {"first": "0.0000", "second": "1.0000"}


def test_the_statement_leaves_out_calls_before_the_plan() -> None:
    statement = build_statement(STARTS_MID_NOVEMBER, "2026-11", [EARLY, FIRST, SECOND])
    assert statement.calls == 2
    [usage, platform] = statement.lines
    assert (usage.quantity, usage.included, usage.billed, usage.amount) == (
        D("2"), D("1"), D("1"), D("1.0000"))
    # the month the plan starts in has a statement, with the first version's period fees
    assert (platform.name, platform.amount) == ("Platform", D("100.00"))
    assert statement.total == D("101.00")


def test_incremental_rating_names_the_call_it_does_not_rate() -> None:
    told: list[tuple[str, str]] = []
    rater = Rater(STARTS_MID_NOVEMBER, on_not_rated=lambda c, why: told.append((c.call_id, why)))
    out = rater.rerate("2026-11", [EARLY, FIRST])
    assert list(out) == ["first"]
    assert told == [("early", "call early was offered on 2026-11-14, before plan 'calls' starts "
                              "(2026-11-15): not rated")]
    with pytest.raises(NotRated, match="call early was offered on 2026-11-14"):
        rater.rate(EARLY)
    assert str(rater.rate(SECOND).amount) == "1.0000"  # "early" used none of the allowance


def test_with_two_versions_only_calls_before_the_first_are_left_out() -> None:
    plan = series(version("2026-11-15"), version("2026-11-20", price="2.00"))
    later = call("later", (2026, 11, 21, 9), (2026, 11, 21, 9, 2))
    rated = rate_calls([EARLY, FIRST, SECOND, later], plan)
    # each version's own allowance: "first" is free under the first, "later" under the second
    assert {k: str(v.amount) for k, v in rated.items()} == {
        "first": "0.0000", "second": "1.0000", "later": "0.0000"}


def test_a_version_without_effective_from_rates_every_call() -> None:
    undated = version(None)
    ancient = call("ancient", (1999, 1, 1, 9), (1999, 1, 1, 9, 2))
    assert set(rate_calls([ancient, EARLY], undated)) == {"ancient", "early"}
    assert build_statement(undated, "1999-01", [ancient]).total == D("100.00")


# A period before the first version has no statement, fees included

def test_a_period_before_the_plan_has_no_statement() -> None:
    plan = series(version("2026-11-15"), version("2027-01-01", platform="200.00"))
    for before in ("2026-10", "1999-01"):
        with pytest.raises(NoStatement) as caught:
            build_statement(plan, before, [])
        assert caught.value.key == "plan.effective_from"
        assert caught.value.path == "2026-11-15.toml"
        assert caught.value.reason == (
            f"plan 'calls' has no version in force in {before}: it starts on 2026-11-15, and a "
            "period before a plan starts has no statement (fees included)")
    # from the month the plan starts: fees of the version in force on the 1st (else the first)
    fees = {p: build_statement(plan, p, []).total for p in ("2026-11", "2026-12", "2027-01")}
    assert fees == {"2026-11": D("100.00"), "2026-12": D("100.00"), "2027-01": D("200.00")}


def test_a_plan_that_has_not_started_is_not_compared() -> None:
    current = version("2026-01-01")
    future = plan_from(VERSION.replace('id = "calls"', 'id = "offer"').format(
        effective_from='effective_from = "2027-01-01"', price="0.50", platform="50.00", fees=""),
        "offer.toml")
    assert compare_plans([current], "2026-11", [FIRST]).plans[0].total == D("100.00")
    with pytest.raises(NoStatement, match="plan 'offer' has no version in force in 2026-11"):
        compare_plans([current, future], "2026-11", [FIRST])


# Once fees: billed in the period holding `on` when the version in force that day lists it;
# the loader warns about a once fee that no period can bill

def test_a_once_fee_dated_before_its_own_version_loads_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "late.toml"
    path.write_text(VERSION.format(effective_from='effective_from = "2026-11-15"', price="1.00",
                                   platform="100.00", fees=once("Setup", "500.00", "2026-11-01")),
                    encoding="utf-8")
    load_plan(path)  # not refused: the plan is valid, one of its fees can never be billed
    book = PlanBook.load(tmp_path)
    assert book.warnings == (
        f"{path}: fee[2]: once fee 'Setup' due 2026-11-01 is never billed: no version of plan "
        "'calls' is in force on that day (the plan starts on 2026-11-15)",)
    # 2026-11 bills the platform fee only (and no other period bills the setup fee)
    lines = build_statement(book.series("calls"), "2026-11", []).lines
    assert [line.name for line in lines if line.kind == "fee"] == ["Platform"]


def test_a_once_fee_under_a_later_version_that_drops_it_is_never_billed() -> None:
    first = version("2026-01-01", fees=once("Setup", "500.00", "2026-12-10"), source="a.toml")
    second = version("2026-12-01", source="b.toml")  # does not list the fee
    plan = series(first, second)
    assert plan.warnings == (
        "a.toml: fee[2]: once fee 'Setup' due 2026-12-10 is never billed: that day falls under "
        "version calls@2026-12-01 (b.toml), which does not list it",)
    assert build_statement(plan, "2026-12", []).total == D("100.00")  # the platform fee only


def test_a_once_fee_dated_before_its_version_under_an_earlier_one_is_never_billed() -> None:
    first = version("2026-01-01", source="a.toml")
    second = version("2026-12-01", fees=once("Setup", "500.00", "2026-11-20"), source="b.toml")
    plan = series(first, second)
    assert plan.warnings == (
        "b.toml: fee[2]: once fee 'Setup' due 2026-11-20 is never billed: that day falls under "
        "version calls@2026-01-01 (a.toml), which does not list it",)
    assert build_statement(plan, "2026-11", []).total == D("100.00")


def test_a_once_fee_repeated_in_the_next_version_is_billed_once_without_warning() -> None:
    setup = once("Setup", "500.00", "2026-12-10")
    plan = series(version("2026-01-01", fees=setup), version("2026-12-01", fees=setup))
    assert plan.warnings == ()
    totals = {p: build_statement(plan, p, []).total for p in ("2026-11", "2026-12", "2027-01")}
    assert totals == {"2026-11": D("100.00"), "2026-12": D("600.00"), "2027-01": D("100.00")}


def test_a_once_fee_changed_in_the_next_version_bills_the_new_amount() -> None:
    plan = series(version("2026-01-01", fees=once("Setup", "500.00", "2026-12-10"),
                          source="a.toml"),
                  version("2026-12-01", fees=once("Setup", "450.00", "2026-12-10"),
                          source="b.toml"))
    # the old amount is never billed (and said so); the version in force on the day bills 450
    assert [w.split(": ")[0:2] for w in plan.warnings] == [["a.toml", "fee[2]"]]
    assert build_statement(plan, "2026-12", []).total == D("550.00")


def test_book_warnings_gather_every_plan() -> None:
    good = version("2026-01-01", fees=once("Setup", "1.00", "2026-02-01"))
    bad = plan_from(VERSION.replace('id = "calls"', 'id = "other"').format(
        effective_from='effective_from = "2026-06-01"', price="1", platform="1",
        fees=once("Setup", "1.00", "2026-05-31")), "other.toml")
    book = PlanBook([good, bad])
    assert book.series("calls").warnings == ()
    assert [w.split(":")[0] for w in book.warnings] == ["other.toml"]


# A month that spans two versions: each its own allowance and tiers; fees and SLA from the 1st

def test_volume_tiers_per_version_count_units_after_that_versions_allowance() -> None:
    text = """
[plan]
id = "vol"
currency = "CNY"
timezone = "Asia/Shanghai"
effective_from = "{day}"
[[charge]]
name = "Calls"
metric = "calls"
included = 1
model = "volume"
tiers = [{{ up_to = 2, price = "1.00" }}, {{ price = "0.50" }}]
"""
    plan = PlanBook([plan_from(text.format(day="2026-11-01"), "a.toml"),
                     plan_from(text.format(day="2026-11-16"), "b.toml")]).series("vol")
    calls = [call(f"a{i}", (2026, 11, 2 + i, 9), (2026, 11, 2 + i, 9, 2)) for i in range(4)]
    calls += [call(f"b{i}", (2026, 11, 20 + i, 9), (2026, 11, 20 + i, 9, 2)) for i in range(2)]
    rated = {k: str(v.amount) for k, v in rate_calls(calls, plan).items()}
    # first version: 4 calls, 1 included, 3 billed: 1.00, 2.00, then all 3 at 0.50 = 1.50
    # second version: 2 calls, 1 included, 1 billed at 1.00
    assert rated == {"a0": "0.0000", "a1": "1.0000", "a2": "1.0000", "a3": "-0.5000",
                     "b0": "0.0000", "b1": "1.0000"}
    statement = build_statement(plan, "2026-11", calls)
    assert [(line.name, line.billed, line.amount) for line in statement.lines] == [
        ("Calls (vol@2026-11-01)", D("3"), D("1.5000")),
        ("Calls (vol@2026-11-16)", D("1"), D("1.0000"))]
