"""Helpers for the rating tests: calls built directly as CallRecords, plans from TOML text."""

from __future__ import annotations

import tomllib
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from botmeter.rating import Charge, PlanVersion, Tier, load_plan, parse_plan
from botmeter.tracking.record import OUTCOMES, CallRecord, Csat, ModuleUsage

SHANGHAI = ZoneInfo("Asia/Shanghai")
PLANS_DIR = Path(__file__).resolve().parent.parent / "config" / "plans"


def local_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
             tz: ZoneInfo = SHANGHAI) -> int:
    """A local wall-clock time as whole UTC epoch milliseconds."""
    return round(datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp() * 1000)


BASE_MS = local_ms(2026, 11, 10, 9)


def make_call(call_id: str, bot: float | None = 60.0, *, end_ms: int | None = None,
              ring: float = 1.0, outcome: str = "handled", after_bot: float = 0.0,
              modules: dict[str, str | int] | None = None, offered_ms: int | None = None,
              csat: tuple[int, int] | None = None) -> CallRecord:
    """A call ending at `end_ms` (epoch ms; default: BASE_MS + 1000 * number in the id) whose
    bot talked `bot` seconds after `ring` seconds of ringing (bot=None: never answered);
    `csat` = (score, scale) rates it."""
    if end_ms is None:
        digits = "".join(ch for ch in call_id if ch.isdigit()) or "0"
        end_ms = BASE_MS + 1000 * int(digits) * 600
    tail = round(after_bot * 1000)
    if bot is None:
        answered = bot_end = None
        start = offered_ms if offered_ms is not None else end_ms - round(ring * 1000)
    else:
        bot_end = end_ms - tail
        answered = bot_end - round(bot * 1000)
        start = offered_ms if offered_ms is not None else answered - round(ring * 1000)
    return CallRecord(
        call_id=call_id, linkedid=call_id, caller_number="13900000001", caller_name=None,
        dialed_number="4000", offered_at=start / 1000,
        bot_answered_at=answered / 1000 if answered is not None else None,
        bot_ended_at=bot_end / 1000 if bot_end is not None else None,
        transferred_at=None, human_answered_at=None, ended_at=end_ms / 1000,
        outcome=outcome,  # type: ignore[arg-type]
        transfer_target=None, hangup_cause=16,
        modules={name: ModuleUsage(Decimal(str(q)), "units") for name, q in (modules or {}).items()},
        csat=Csat(*csat) if csat is not None else None,
    )


def plan_from(text: str, source: str = "test.toml") -> PlanVersion:
    """A plan version from TOML text; `[plan]` defaults to CNY in Asia/Shanghai."""
    if "[plan]" not in text:
        text = PLAN_HEAD + text
    return parse_plan(tomllib.loads(text), source)


PLAN_HEAD = """
[plan]
id = "test"
currency = "CNY"
timezone = "Asia/Shanghai"
"""


def example(name: str) -> PlanVersion:
    return load_plan(PLANS_DIR / name)


def D(text: str) -> Decimal:  # noqa: N802
    return Decimal(text)


# Hypothesis strategies: random plans and calls

METRICS = ("bot_seconds", "call_seconds", "calls", "module:asr")
MODELS = ("per_unit", "graduated", "volume", "package")
UNITS = [Decimal(1), Decimal(60), Decimal("0.5"), Decimal(7), Decimal(1000)]
HOUR_MS = 3_600_000


def money(places: int = 5, high: int = 20_000) -> st.SearchStrategy[Decimal]:
    return st.builds(lambda n, p: Decimal(n).scaleb(-p), st.integers(0, high), st.integers(0, places))


@st.composite
def charges(draw: st.DrawFn, name: str, models: tuple[str, ...] = MODELS,
            metrics: tuple[str, ...] = METRICS) -> Charge:
    metric = draw(st.sampled_from(metrics))
    model = draw(st.sampled_from(models))
    time = metric in ("bot_seconds", "call_seconds")
    tiers: tuple[Tier, ...] = ()
    price = package_size = None
    if model in ("graduated", "volume"):
        bounds = sorted(set(draw(st.lists(st.sampled_from(
            [Decimal("0.5"), Decimal(1), Decimal(2), Decimal("3.25"), Decimal(10), Decimal(60)]),
            max_size=3))))
        prices = draw(st.lists(money(), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
        tiers = tuple(Tier(up, p) for up, p in zip([*bounds, None], prices, strict=True))
    else:
        price = draw(money())
    if model == "package":
        package_size = draw(st.sampled_from([Decimal(1), Decimal("0.5"), Decimal(3)]))
    return Charge(
        name=name, metric=metric, model=model, price=price, package_size=package_size,  # type: ignore[arg-type]
        tiers=tiers,
        outcomes=tuple(draw(st.sets(st.sampled_from(OUTCOMES), min_size=1))),
        min_seconds=draw(st.integers(0, 5)) if time else 0,
        first_block=draw(st.sampled_from([0, 1, 30, 60])) if time else 0,
        block=draw(st.sampled_from([1, 6, 7, 60])) if time else 1,
        unit=draw(st.sampled_from(UNITS)),
        included=draw(st.sampled_from([Decimal(0), Decimal(0), Decimal(1), Decimal("2.5"),
                                       Decimal(10)])),
    )


@st.composite
def plans(draw: st.DrawFn, models: tuple[str, ...] = MODELS,
          metrics: tuple[str, ...] = METRICS) -> PlanVersion:
    count = draw(st.integers(1, 3))
    return PlanVersion(
        plan_id="h", name="h", currency="CNY", minor_unit=2, timezone=SHANGHAI,
        precision=draw(st.sampled_from([Decimal("0.0001"), Decimal("0.01"), Decimal(1),
                                        Decimal("0.000001")])),
        charges=tuple(draw(charges(f"charge {i}", models, metrics)) for i in range(count)),
    )


@st.composite
def call_lists(draw: st.DrawFn, max_size: int = 25, span_ms: int = 20 * 24 * HOUR_MS,
               ) -> list[CallRecord]:
    """Calls ending within [BASE_MS, BASE_MS + span_ms), often at the same instant."""
    size = draw(st.integers(0, max_size))
    names = draw(st.permutations(range(size)))
    calls = []
    for i in range(size):
        end = draw(st.one_of(st.integers(0, span_ms // HOUR_MS - 1).map(lambda h: h * HOUR_MS),
                             st.integers(0, span_ms - 1)))
        outcome = draw(st.sampled_from(OUTCOMES))
        bot = None if outcome == "abandoned" else draw(st.integers(0, 400_000)) / 1000
        asr = draw(st.none() | st.integers(0, 2_000_000).map(lambda n: Decimal(n).scaleb(-3)))
        rating = draw(st.none() | st.integers(2, 10).flatmap(
            lambda scale: st.tuples(st.integers(1, scale), st.just(scale))))
        calls.append(make_call(
            f"c{names[i]:03d}", bot, end_ms=BASE_MS + end, outcome=outcome, csat=rating,
            ring=draw(st.integers(0, 9_000)) / 1000,
            after_bot=draw(st.integers(0, 90_000)) / 1000 if outcome == "transferred" else 0.0,
            modules={"asr": str(asr)} if asr is not None else None))
    return calls
