"""The report prices plans from usage summed in SQL (reports/plan_usage.py and
rating/usage.py): the statements and the comparison equal those rated call by call."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import pytest

from botmeter.rating import PlanBook, PlanSeries, compare_plans, period_bounds, rate_calls
from botmeter.rating.compare import compare_totals
from botmeter.rating.statement import build_statement
from botmeter.rating.usage import period_total
from botmeter.reports import plan_usage
from botmeter.reports.plan_usage import period_usages
from botmeter.storage.store import CallStore
from botmeter.tracking.record import CallRecord, Csat, ModuleUsage
from tests.rating_support import local_ms

ROOT = Path(__file__).resolve().parents[1]

#: two versions (the second from 2026-11-12), starting 2026-10-20: calls offered before are
#: not rated; odd blocks, call_seconds and a module with an allowance
VERSIONED = ("""
[plan]
id = "versioned"
currency = "CNY"
timezone = "Asia/Shanghai"
effective_from = "2026-10-20"
precision = "0.001"

[[charge]]
name = "Talk"
metric = "call_seconds"
outcomes = ["handled", "transferred"]
min_seconds = 2
first_block = 30
block = 7
unit = 60
included = 40
model = "volume"
tiers = [{ up_to = 100, price = "0.3" }, { price = "0.25" }]

[[charge]]
name = "ASR"
metric = "module:asr"
unit = 60
included = "1.5"
price = "0.07"

[sla]
fee = "5.00"
answer_rate = 0.9
max_ring_seconds = "4.5"
ignore_abandoned_under = "2.5"
credit_percent = 10
min_csat = "3.9"
csat_min_responses = 3
csat_credit_percent = 5
""", """
[plan]
id = "versioned"
currency = "CNY"
timezone = "Asia/Shanghai"
effective_from = "2026-11-12"

[[charge]]
name = "Bot"
metric = "bot_seconds"
first_block = 0
block = 1
price = "0.002"

[[charge]]
name = "Transfers"
metric = "calls"
outcomes = ["transferred"]
price = "0.3"

[[fee]]
name = "Base"
amount = "9.00"

[sla]
fee = "1.00"
min_csat = "4.2"
csat_credit_percent = 7
""")

#: a plan in another time zone: its November has other bounds
UTC_PLAN = """
[plan]
id = "utc"
currency = "CNY"
timezone = "UTC"

[[charge]]
name = "Bot minutes"
metric = "bot_seconds"
min_seconds = 5
first_block = 20
block = 10
unit = 60
included = 100
model = "graduated"
tiers = [{ up_to = 300, price = "0.11" }, { price = "0.09" }]

[sla]
fee = "2.00"
answer_rate = "0.95"
max_ring_seconds = 3
credit_percent = 20
"""

OUTCOMES = ("handled", "transferred", "abandoned", "failed")


def random_calls(rnd: random.Random, count: int) -> list[CallRecord]:
    """Calls from mid October to early December, ms times, every outcome, csat, modules."""
    first, last = local_ms(2026, 10, 15), local_ms(2026, 12, 3)
    calls = []
    for i in range(count):
        offered = rnd.randrange(first, last)
        outcome = rnd.choice(OUTCOMES)
        ring = rnd.choice((0, 500, 2_499, 2_500, 3_000, 4_500, 4_501, rnd.randint(1, 9_000)))
        modules: dict[str, ModuleUsage] = {}
        if outcome == "abandoned" and rnd.random() < 0.8:
            answered = bot_end = None
            ended = offered + ring
        else:
            answered = offered + ring
            bot_end = answered + rnd.choice((0, 1, 1_999, 2_000, 30_000, 30_001,
                                             rnd.randint(1, 400_000)))
            ended = bot_end + (rnd.randint(0, 90_000) if rnd.random() < 0.5 else 0)
            if rnd.random() < 0.7:
                modules["asr"] = ModuleUsage(Decimal(rnd.randint(0, 300_000)).scaleb(-3), "s")
            if rnd.random() < 0.5:
                modules["nlu"] = ModuleUsage(Decimal(rnd.randint(1, 40)), "requests")
            if rnd.random() < 0.5:
                modules["tts"] = ModuleUsage(Decimal(rnd.randint(20, 3_000)), "characters")
            if rnd.random() < 0.3:
                modules["qa"] = ModuleUsage(Decimal(rnd.randint(0, 5)), "answers")
        csat = None
        if answered is not None and rnd.random() < 0.3:
            scale = rnd.choice((5, 5, 10, 3))
            csat = Csat(rnd.randint(1, scale), scale)
        calls.append(CallRecord(
            f"c{i:05d}", f"c{i:05d}", f"1390{rnd.randrange(50)}", None, "4000",
            offered / 1000, answered / 1000 if answered is not None else None,
            bot_end / 1000 if bot_end is not None else None, None, None, ended / 1000,
            outcome, None, 16, modules, csat=csat))  # type: ignore[arg-type]
    return calls


def plans(tmp_path: Path, whole: bool = False) -> list[PlanSeries]:
    """The example plans and the three above; `whole`: with the SLA thresholds in whole
    seconds, so that every meter and threshold is (the roll-ups price them)."""
    folder = tmp_path / "plans"
    folder.mkdir()
    for path in (ROOT / "config" / "plans").glob("*.toml"):
        (folder / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    for n, text in enumerate((*VERSIONED, UTC_PLAN)):
        if whole:
            text = text.replace('"4.5"', '"4"').replace('"2.5"', '"2"')
        (folder / f"extra-{n}.toml").write_text(text, encoding="utf-8")
    return [s for s in PlanBook.load(folder) if s.currency == "CNY"]


def only_rolled(monkeypatch: pytest.MonkeyPatch, whole: bool) -> None:
    """With whole seconds, pricing must come from the roll-ups (else October and November,
    whose SLA thresholds are fractions of a second, come from the calls)."""
    def refuse(*args: object) -> None:
        raise AssertionError("priced from the calls, not the roll-ups")
    if whole:
        monkeypatch.setattr(plan_usage, "_raw_sums", refuse)


@pytest.mark.parametrize("whole", (False, True))
@pytest.mark.parametrize("seed", range(6))
def test_summed_usage_prices_as_rating_each_call(tmp_path: Path, seed: int, whole: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(seed)
    series = plans(tmp_path, whole)
    only_rolled(monkeypatch, whole)
    calls = random_calls(rnd, rnd.choice((0, 1, 40, 400, 1500)))
    store = CallStore(tmp_path / "calls.db")
    store.save(calls, rate_calls(calls, series[0]))
    stored = store.calls_ended_between(local_ms(2026, 10, 1) / 1000, local_ms(2026, 12, 31) / 1000)
    for period in ("2026-10", "2026-11", "2026-12"):
        priced = [s for s in series if _has_statement(s, period)]
        usages = period_usages(store.db.conn, priced, period)
        totals = [period_total(s, period, usages[s.plan_id]) for s in priced]
        for s, total in zip(priced, totals, strict=True):
            expected = build_statement(s, period, stored)
            assert total.statement == expected, (s.plan_id, period)
        ours = compare_totals(totals, period, active=priced[0].plan_id)
        theirs = compare_plans(priced, period, stored, active=priced[0].plan_id)
        assert ours == theirs
    store.close()


@pytest.mark.parametrize("whole", (False, True))
def test_plans_start_and_bounds_are_honoured(tmp_path: Path, whole: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls offered before the plan starts, and ending on a period's bounds."""
    series = plans(tmp_path, whole)
    only_rolled(monkeypatch, whole)
    versioned = next(s for s in series if s.plan_id == "versioned")
    start, end = period_bounds("2026-11", versioned.timezone)
    rnd = random.Random(3)
    calls = [c._replace(ended_at=moment, bot_ended_at=moment if c.bot_ended_at else None)
             for c, moment in zip(random_calls(rnd, 6), (start, end, start - 0.001, end - 0.001,
                                                          versioned.starts[0], versioned.starts[1]),
                                  strict=True)]
    calls = [c._replace(offered_at=min(c.offered_at, c.ended_at)) for c in calls]
    store = CallStore(tmp_path / "calls.db")
    store.save(calls, {})
    stored = store.calls_ended_between(start - 86400 * 40, end + 86400)
    for period in ("2026-10", "2026-11"):
        usage = period_usages(store.db.conn, [versioned], period)[versioned.plan_id]
        assert period_total(versioned, period, usage).statement == build_statement(
            versioned, period, stored)
    store.close()


def _has_statement(series: PlanSeries, period: str) -> bool:
    try:
        series.fee_version(period)
    except Exception:
        return False
    return True
