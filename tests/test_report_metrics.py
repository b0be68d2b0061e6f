"""build_report against a fixture database, every number computed by hand (docs/reports.md)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from botmeter.rating import PlanBook, rate_calls
from botmeter.reports.forecast import budget_status
from botmeter.reports.metrics import Pricing, build_report
from botmeter.reports.window import Window
from botmeter.storage.store import CallStore
from botmeter.tracking.record import CallRecord
from tests.rating_support import local_ms, make_call

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOVEMBER = Window.month("2026-11", SHANGHAI)

SIMPLE = """
[plan]
id = "simple"
currency = "CNY"
timezone = "Asia/Shanghai"
effective_from = "2026-01-01"

[[charge]]
name = "Calls"
metric = "calls"
price = "1.50"

[[fee]]
name = "Platform"
amount = "100.00"

[sla]
fee = "10.00"
answer_rate = 0.9
max_ring_seconds = 5
ignore_abandoned_under = 3
credit_percent = 10
min_csat = "4.0"
csat_credit_percent = 5
"""

CHEAP = """
[plan]
id = "cheap"
currency = "CNY"
timezone = "Asia/Shanghai"

[[charge]]
name = "Calls"
metric = "calls"
price = "0.50"
"""


def call(call_id: str, day: int, hour: int, outcome: str = "handled", *, ring: float = 1,
         bot: float | None = 30, after: float = 0, wait: float | None = None,
         caller: str = "A", csat: tuple[int, int] | None = None,
         modules: dict[str, str | int] | None = None, dialed: str = "4000",
         target: str | None = None, month: int = 11) -> CallRecord:
    """A call offered at local `hour`:00 on `day`, ringing `ring` s, the bot talking `bot` s,
    then `after` s to the end; a transfer at the bot's end answered by a human `wait` s
    later (None: never)."""
    offered = local_ms(2026, month, day, hour)
    end = offered + round((ring + (bot or 0) + after) * 1000)
    record = make_call(call_id, bot, end_ms=end, offered_ms=offered, ring=ring, after_bot=after,
                       outcome=outcome, csat=csat, modules=modules)
    record = record._replace(caller_number=caller, dialed_number=dialed,
                             transfer_target=target)
    if outcome == "transferred":
        assert record.bot_ended_at is not None
        human = record.bot_ended_at + wait if wait is not None else None
        record = record._replace(transferred_at=record.bot_ended_at, human_answered_at=human)
    return record


CALLS = [
    call("c1", 2, 10, ring=2, bot=30, caller="A", csat=(5, 5), modules={"asr": "2.25"}),
    call("c2", 2, 12, ring=1, bot=90, caller="A", csat=(8, 10)),
    call("c3", 3, 9, "transferred", bot=20, after=60, wait=10, caller="B", csat=(3, 5),
         dialed="4001", target="sales"),
    call("c4", 5, 10, "transferred", bot=40, after=30, caller="A", target="sales"),
    call("c5", 10, 8, "abandoned", ring=4, bot=None, caller="C"),
    call("c6", 10, 9, "abandoned", ring=2, bot=None, caller=""),
    call("c7", 20, 9, "failed", ring=6, bot=10, caller="B"),
    call("c8", 30, 23, bot=600, caller="D", modules={"asr": "1.5"}),
]


def write_plans(folder: Path, *texts: str) -> PlanBook:
    folder.mkdir(exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"plan{i}.toml").write_text(text)
    return PlanBook.load(folder)


@pytest.fixture
def book(tmp_path: Path) -> PlanBook:
    return write_plans(tmp_path / "plans", SIMPLE, CHEAP)


@pytest.fixture
def store(tmp_path: Path, book: PlanBook) -> CallStore:
    store = CallStore(tmp_path / "calls.db")
    store.save(CALLS, rate_calls(CALLS, book.series("simple")))
    return store


def pricing(book: PlanBook, budget: str | None = None) -> Pricing:
    return Pricing(book.series("simple"), list(book), Decimal(budget) if budget else None)


AFTER_NOVEMBER = local_ms(2026, 12, 5) / 1000


def test_totals_every_key(store: CallStore, book: PlanBook) -> None:
    report = build_report(store, NOVEMBER, "day", pricing(book, "150.00"), now=AFTER_NOVEMBER)
    assert report["period"] == {"from": "2026-11-01T00:00:00+08:00",
                                "to": "2026-12-01T00:00:00+08:00", "timezone": "Asia/Shanghai"}
    assert report["totals"] == {
        "offered": 8, "bot_answered": 6, "handled": 3, "transferred": 2, "abandoned": 2,
        "failed": 1,
        "answer_rate": 0.75, "containment_rate": 0.5, "transfer_rate": 0.3333,
        "transfer_answered_rate": 0.5,
        # sorted 10 20 30 40 90 600: median (30 + 40) / 2, p90 at rank 4.5: 90 + 0.5 * 510
        "bot_seconds": {"total": 790.0, "mean": 131.667, "median": 35.0, "p90": 345.0},
        "human_seconds": {"total": 50.0},
        "human_wait_seconds": {"median": 10.0},
        "abandoned_wait_seconds": {"mean": 3.0},
        "modules": {"asr": {"quantity": 3.75, "unit": "units"}},
        # 5, 8 of 10 = 1 + 28/9 = 4.111 (bucket 4), 3: mean 12.111 / 3 = 4.037
        "csat": {"responses": 3, "response_rate": 0.5, "mean": 4.04,
                 "distribution": {"1": 0, "2": 0, "3": 1, "4": 1, "5": 1},
                 "by_outcome": {"handled": 4.56, "transferred": 3.0}},
        # six charged calls at 1.50
        "cost": "9.0000", "currency": "CNY", "cost_per_handled_call": "3.0000",
        # the SLA counts 7 (c6 rang 2 s < 3, abandoned); 5 answered within 5 s (not c7, 6 s)
        "sla_answer_rate": 0.7143,
    }
    assert report["sla"] == [
        {"clause": "answer_rate", "measured": 0.7143, "target": 0.9, "sample": 7, "met": False},
        {"clause": "csat", "measured": 4.037, "target": 4.0, "sample": 3, "met": True}]
    # simple: 9.00 usage + 100 fee + 10 SLA fee - 0.90 credit (10% of usage); cheap: 6 x 0.50
    assert report["plans"] == [{"plan_id": "cheap", "total": "3.00", "vs_active": "-115.10"},
                               {"plan_id": "simple", "total": "118.10", "vs_active": "0.00"}]
    # the month is over: its usage plus its fees (100 + 10)
    assert report["forecast"] == {"month_end_cost": "119.00", "bundle_exhausted_on": None}
    assert report["budget"] == {"monthly": "150.00", "cost_to_date": "119.0000",
                                "used_share": 0.7933, "status": "ok"}
    # A: 11-02 10:00, 12:00 (2 h later), 11-05 10:00 (70 h later); B 17 days apart
    assert report["repeat_callers"] == {
        "within_24h": 1, "within_7d": 2,
        "top": [{"caller_number": "A", "calls": 3}, {"caller_number": "B", "calls": 2}]}


def keyed(report: dict, *fields: str) -> dict:
    return {row["key"]: tuple(row[f] for f in fields) for row in report["rows"]}


def test_rows_by_day(store: CallStore, book: PlanBook) -> None:
    report = build_report(store, NOVEMBER, "day", pricing(book), now=AFTER_NOVEMBER)
    rows = {row["key"]: row for row in report["rows"]}
    assert len(rows) == 30 and list(rows)[0] == "2026-11-01" and list(rows)[-1] == "2026-11-30"
    assert rows["2026-11-02"] == {
        "key": "2026-11-02", "offered": 2, "bot_answered": 2, "handled": 2, "transferred": 0,
        "abandoned": 0, "failed": 0, "answer_rate": 1.0, "containment_rate": 1.0,
        "transfer_rate": 0.0, "transfer_answered_rate": None, "cost": "3.0000"}
    assert rows["2026-11-10"]["answer_rate"] == 0.0
    assert rows["2026-11-10"]["containment_rate"] is None
    assert rows["2026-11-10"]["cost"] == "0.0000"
    assert rows["2026-11-01"]["offered"] == 0
    assert sum(row["offered"] for row in rows.values()) == 8


def test_rows_by_week_hour_weekday(store: CallStore, book: PlanBook) -> None:
    def rows(by: str) -> dict:
        return keyed(build_report(store, NOVEMBER, by, pricing(book), now=AFTER_NOVEMBER),
                     "offered", "cost")

    assert rows("week") == {"2026-W44": (0, "0.0000"), "2026-W45": (4, "6.0000"),
                            "2026-W46": (2, "0.0000"), "2026-W47": (1, "1.5000"),
                            "2026-W48": (0, "0.0000"), "2026-W49": (1, "1.5000")}
    hours = rows("hour")
    assert list(hours) == [f"{h:02d}" for h in range(24)]
    assert {k: v[0] for k, v in hours.items() if v[0]} == {"08": 1, "09": 3, "10": 2, "12": 1,
                                                          "23": 1}
    assert rows("weekday") == {"Mon": (3, "4.5000"), "Tue": (3, "1.5000"), "Wed": (0, "0.0000"),
                               "Thu": (1, "1.5000"), "Fri": (1, "1.5000"),
                               "Sat": (0, "0.0000"), "Sun": (0, "0.0000")}


def test_rows_by_outcome_dialed_target(store: CallStore, book: PlanBook) -> None:
    def rows(by: str) -> dict:
        return keyed(build_report(store, NOVEMBER, by, pricing(book), now=AFTER_NOVEMBER),
                     "offered", "bot_answered", "transfer_answered_rate", "cost")

    assert rows("outcome") == {"handled": (3, 3, None, "4.5000"),
                               "transferred": (2, 2, 0.5, "3.0000"),
                               "abandoned": (2, 0, None, "0.0000"),
                               "failed": (1, 1, None, "1.5000")}
    assert rows("dialed_number") == {"4000": (7, 5, 0.0, "7.5000"),
                                     "4001": (1, 1, 1.0, "1.5000")}
    assert rows("transfer_target") == {None: (6, 4, None, "6.0000"),
                                       "sales": (2, 2, 0.5, "3.0000")}


def test_charts(store: CallStore, book: PlanBook) -> None:
    charts = build_report(store, NOVEMBER, "day", pricing(book), now=AFTER_NOVEMBER)["charts"]
    daily = {d["date"]: d for d in charts["daily"]}
    assert len(daily) == 30
    assert daily["2026-11-03"] == {"date": "2026-11-03", "handled": 0, "transferred": 1,
                                   "abandoned": 0, "failed": 0, "cost": "1.5000"}
    assert daily["2026-11-04"] == {"date": "2026-11-04", "handled": 0, "transferred": 0,
                                   "abandoned": 0, "failed": 0, "cost": "0.0000"}
    assert [b["calls"] for b in charts["bot_seconds_histogram"]] == [1, 1, 2, 0, 1, 0, 0, 0, 1]
    assert charts["bot_seconds_histogram"][0] == {"from": 0, "to": 15, "calls": 1}
    assert charts["bot_seconds_histogram"][-1] == {"from": 600, "to": None, "calls": 1}
    heat = charts["heatmap"]
    assert len(heat) == 7 and all(len(day) == 24 for day in heat)
    assert {(d, h): n for d, day in enumerate(heat) for h, n in enumerate(day) if n} == {
        (0, 10): 1, (0, 12): 1, (0, 23): 1, (1, 8): 1, (1, 9): 2, (3, 10): 1, (4, 9): 1}


def test_day_boundary_in_shanghai(tmp_path: Path) -> None:
    """15:59:59Z is 23:59:59 on the 4th in Shanghai; 16:00:00Z is midnight of the 5th."""
    store = CallStore(tmp_path / "calls.db")
    late = round(1793807999 * 1000)  # 2026-11-04T15:59:59Z
    assert late == local_ms(2026, 11, 4, 23, 59, 59)
    store.save([make_call("c1", None, outcome="abandoned", offered_ms=late, end_ms=late + 500),
                make_call("c2", None, outcome="abandoned", offered_ms=late + 1000,
                          end_ms=late + 1500)])
    report = build_report(store, NOVEMBER, "day")
    assert keyed(report, "offered")["2026-11-04"] == (1,)
    assert keyed(report, "offered")["2026-11-05"] == (1,)
    hours = keyed(build_report(store, NOVEMBER, "hour"), "offered")
    assert hours["23"] == (1,) and hours["00"] == (1,)
    # no plans: what needs them is null or empty
    assert report["totals"]["cost"] is None and report["totals"]["currency"] is None
    assert report["sla"] == [] and report["plans"] == []
    assert report["forecast"] is None and report["budget"] is None
    assert report["charts"]["daily"][3]["cost"] is None
    utc = build_report(store, Window.month("2026-11", ZoneInfo("UTC")), "day")
    assert keyed(utc, "offered")["2026-11-04"] == (2,)


def test_window_in_a_half_hour_zone(tmp_path: Path) -> None:
    """Asia/Kolkata is UTC+05:30: slots of ten minutes keep local hours apart."""
    kolkata = ZoneInfo("Asia/Kolkata")
    store = CallStore(tmp_path / "calls.db")
    at = local_ms(2026, 11, 4, 9, 59, 0, tz=kolkata)
    store.save([make_call("c1", None, outcome="abandoned", offered_ms=at, end_ms=at + 500),
                make_call("c2", None, outcome="abandoned", offered_ms=at + 60_000,
                          end_ms=at + 60_500)])
    hours = keyed(build_report(store, Window.month("2026-11", kolkata), "hour"), "offered")
    assert hours["09"] == (1,) and hours["10"] == (1,)


def test_month_without_calls(store: CallStore, book: PlanBook) -> None:
    december = Window.month("2026-12", SHANGHAI)
    report = build_report(store, december, "day", pricing(book, "200"),
                          now=local_ms(2027, 1, 2) / 1000)
    totals = report["totals"]
    assert totals["offered"] == 0
    for key in ("answer_rate", "containment_rate", "transfer_rate", "transfer_answered_rate",
                "cost_per_handled_call", "sla_answer_rate"):
        assert totals[key] is None, key
    assert totals["bot_seconds"] == {"total": 0.0, "mean": None, "median": None, "p90": None}
    assert totals["human_wait_seconds"] == {"median": None}
    assert totals["abandoned_wait_seconds"] == {"mean": None}
    assert totals["modules"] == {}
    assert totals["csat"] == {"responses": 0, "response_rate": None, "mean": None,
                              "distribution": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0},
                              "by_outcome": {}}
    assert totals["cost"] == "0.0000"
    assert len(report["charts"]["daily"]) == 31
    assert all(d["handled"] + d["transferred"] + d["abandoned"] + d["failed"] == 0
               for d in report["charts"]["daily"])
    assert all(b["calls"] == 0 for b in report["charts"]["bot_seconds_histogram"])
    assert report["forecast"] == {"month_end_cost": "110.00", "bundle_exhausted_on": None}
    assert report["budget"]["status"] == "ok" and report["budget"]["used_share"] == 0.55
    assert report["repeat_callers"] == {"within_24h": 0, "within_7d": 0, "top": []}
    assert report["sla"][0]["measured"] is None and report["sla"][0]["met"] is True


def test_month_spanning_two_plan_versions(tmp_path: Path) -> None:
    head = """
[plan]
id = "versioned"
currency = "CNY"
timezone = "Asia/Shanghai"
effective_from = "{day}"

[[charge]]
name = "Calls"
metric = "calls"
price = "{price}"
"""
    book = write_plans(tmp_path / "plans", head.format(day="2026-01-01", price="1.00"),
                       head.format(day="2026-11-15", price="2.00"))
    series = book.series("versioned")
    calls = [call("c1", 10, 9), call("c2", 20, 9), call("c3", 21, 9)]
    store = CallStore(tmp_path / "calls.db")
    store.save(calls, rate_calls(calls, series))
    report = build_report(store, NOVEMBER, "week", Pricing(series, list(book)),
                          now=AFTER_NOVEMBER)
    assert report["totals"]["cost"] == "5.0000"  # 1.00 before the 15th, 2 x 2.00 after
    assert report["totals"]["cost_per_handled_call"] == "1.6667"
    assert report["plans"] == [{"plan_id": "versioned", "total": "5.00", "vs_active": "0.00"}]
    assert keyed(report, "cost")["2026-W46"] == ("1.0000",)
    assert keyed(report, "cost")["2026-W47"] == ("4.0000",)


BUNDLE = """
[plan]
id = "bundle"
currency = "CNY"
timezone = "Asia/Shanghai"
effective_from = "2026-01-01"

[[charge]]
name = "Bot minutes"
metric = "bot_seconds"
min_seconds = 3
first_block = 60
block = 6
unit = 60
included = 10
price = "0.10"

[[fee]]
name = "Bundle"
amount = "450.00"
"""

MID_NOVEMBER = local_ms(2026, 11, 16) / 1000  # 15 of 30 days elapsed


def bundle_report(tmp_path: Path, calls: list[CallRecord], budget: str | None = None) -> dict:
    book = write_plans(tmp_path / "plans", BUNDLE)
    series = book.series("bundle")
    store = CallStore(tmp_path / "calls.db")
    store.save(calls, rate_calls(calls, series))
    return build_report(store, NOVEMBER, "day",
                        Pricing(series, list(book), Decimal(budget) if budget else None),
                        now=MID_NOVEMBER)


def test_bundle_used_up(tmp_path: Path) -> None:
    """5 + 5 minutes use the 10 included on the 5th; 5 more cost 0.50 by the 16th: the
    month ends at 0.50 + 0.50 / 15 days x 15 days + 450 fee."""
    calls = [call("c1", 2, 9, bot=300), call("c2", 5, 9, bot=300), call("c3", 8, 9, bot=300)]
    report = bundle_report(tmp_path, calls, budget="500")
    assert report["totals"]["cost"] == "0.5000"
    assert report["forecast"] == {"month_end_cost": "451.00",
                                  "bundle_exhausted_on": "2026-11-05"}
    # cost to date 450.50 of 500
    assert report["budget"] == {"monthly": "500", "cost_to_date": "450.5000",
                                "used_share": 0.901, "status": "warning"}


def test_bundle_runs_out_at_the_pace(tmp_path: Path) -> None:
    """330 s in 15 days: the other 270 s of the 600 last 270 / 330 x 15 days = 12.27 days
    from the 16th: the 28th."""
    report = bundle_report(tmp_path, [call("c1", 2, 9, bot=330)], budget="450")
    assert report["forecast"] == {"month_end_cost": "450.00",
                                  "bundle_exhausted_on": "2026-11-28"}
    assert report["budget"]["status"] == "over" and report["budget"]["used_share"] == 1.0


def test_bundle_lasts_the_month(tmp_path: Path) -> None:
    report = bundle_report(tmp_path, [call("c1", 2, 9, bot=120)])
    assert report["forecast"] == {"month_end_cost": "450.00", "bundle_exhausted_on": None}
    assert report["budget"] is None


@pytest.mark.parametrize(("cost", "share", "status"), [
    ("0", 0.0, "ok"), ("79.99", 0.7999, "ok"), ("80", 0.8, "warning"),
    ("99.999", 1.0, "warning"), ("100", 1.0, "over"), ("250", 2.5, "over")])
def test_budget_statuses(cost: str, share: float, status: str) -> None:
    got = budget_status(Decimal(cost), Decimal(100), Decimal("0.01"))
    assert (got["used_share"], got["status"]) == (share, status)


def test_csat_ten_point_buckets(tmp_path: Path) -> None:
    """On 10 points, s maps to 1 + (s - 1) x 4 / 9, rounded half up: 1 1.44 1.89 2.33 2.78
    3.22 3.67 4.11 4.56 5 -> 1 1 2 2 3 3 4 4 5 5."""
    calls = [call(f"c{s}", 2, 9, csat=(s, 10)) for s in range(1, 11)]
    calls.append(call("c11", 3, 9, csat=(2, 3)))  # 1 + 1 x 4 / 2 = 3
    store = CallStore(tmp_path / "calls.db")
    store.save(calls)
    csat = build_report(store, NOVEMBER)["totals"]["csat"]
    assert csat["distribution"] == {"1": 2, "2": 2, "3": 3, "4": 2, "5": 2}
    assert csat["responses"] == 11 and csat["response_rate"] == 1.0
    assert csat["mean"] == 3.0  # (10 x 3 + 3) / 11


def test_repeat_callers_edges(tmp_path: Path) -> None:
    """Exactly 24 h later is within 24 h; a number's first call in the window is no repeat."""
    first = local_ms(2026, 11, 3, 9)
    calls = [make_call("c1", 30, offered_ms=first, end_ms=first + 31_000),
             make_call("c2", 30, offered_ms=first + 86_400_000, end_ms=first + 86_431_000),
             make_call("c3", 30, offered_ms=first + 86_400_001 + 7 * 86_400_000,
                       end_ms=first + 8 * 86_400_000 + 31_000)]
    store = CallStore(tmp_path / "calls.db")
    store.save(calls)
    got = build_report(store, NOVEMBER)["repeat_callers"]
    assert got == {"within_24h": 1, "within_7d": 1,
                   "top": [{"caller_number": "13900000001", "calls": 3}]}
    window = Window(first / 1000 + 1, NOVEMBER.end, SHANGHAI)  # c1 outside the window
    got = build_report(store, window)["repeat_callers"]
    assert got["within_24h"] == 0 and got["within_7d"] == 0
