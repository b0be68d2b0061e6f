"""Load and validate one plan file into a PlanVersion, or refuse it with PlanError."""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..tracking.record import OUTCOMES
from .currencies import currency_problem, minor_unit
from .errors import PlanError
from .fields import Table
from .plan import (
    DEFAULT_CSAT_MIN_RESPONSES,
    DEFAULT_OUTCOMES,
    MODELS,
    TIME_METRICS,
    Charge,
    Fee,
    PlanVersion,
    Sla,
    Tier,
)

PLAN_ID = re.compile(r"[a-z0-9._-]+\Z")
MODULE_NAME = re.compile(r"[^\sA-Z]+\Z")
TOP_KEYS = ("plan", "charge", "fee", "sla")
PLAN_KEYS = ("id", "name", "currency", "timezone", "effective_from", "precision")
CHARGE_KEYS = ("name", "metric", "outcomes", "min_seconds", "first_block", "block", "unit",
               "included", "model", "price", "package_size", "tiers")
TIER_KEYS = ("up_to", "price")
FEE_KEYS = ("name", "amount", "every", "on")
SLA_KEYS = ("fee", "answer_rate", "max_ring_seconds", "ignore_abandoned_under", "credit_percent",
            "min_csat", "csat_min_responses", "csat_credit_percent")
#: each SLA clause: the keys it requires together, and its optional keys
ANSWER_CLAUSE = (("answer_rate", "max_ring_seconds", "credit_percent"), ("ignore_abandoned_under",))
CSAT_CLAUSE = (("min_csat", "csat_credit_percent"), ("csat_min_responses",))
HUNDRED = Decimal(100)


def load_plan(path: Path | str) -> PlanVersion:
    """Read and validate one plan file."""
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(source, "(file)", exc.strerror or str(exc)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PlanError(source, "(syntax)", str(exc)) from None
    except ValueError:  # tomllib: an integer of thousands of digits
        raise PlanError(source, "(syntax)", "a number has too many digits") from None
    return parse_plan(data, source)


def parse_plan(data: dict[str, Any], source: str = "<plan>") -> PlanVersion:
    """Validate an already parsed plan document."""
    top = Table(source, "", data, TOP_KEYS)
    if not top.has("plan"):
        top.fail("plan", "required: a [plan] table")
    head = Table(source, "plan", data["plan"], PLAN_KEYS)
    plan_id = head.text("id")
    if not PLAN_ID.match(plan_id):
        head.fail("id", f"{plan_id!r} must match [a-z0-9._-]+")
    currency = head.text("currency")
    problem = currency_problem(currency)
    if problem is not None:
        head.fail("currency", problem)
    digits = minor_unit(currency)
    assert digits is not None
    effective_from = head.day("effective_from")
    precision = head.money("precision", required=False)
    if precision is None:
        precision = Decimal("0.0001")
    if not 0 < precision <= 1 or precision.normalize().as_tuple().digits != (1,):
        head.fail("precision", f'must be a power of ten up to 1, such as "0.0001" (got {precision})')
    charges = tuple(_charge(Table(source, f"charge[{n}]", raw, CHARGE_KEYS))
                    for n, raw in enumerate(top.tables("charge"), 1))
    _unique_names(source, charges)
    fees = tuple(_fee(Table(source, f"fee[{n}]", raw, FEE_KEYS))
                 for n, raw in enumerate(top.tables("fee"), 1))
    sla = _sla(Table(source, "sla", data["sla"], SLA_KEYS)) if top.has("sla") else None
    return PlanVersion(
        plan_id=plan_id,
        name=head.text("name", plan_id),
        currency=currency,
        minor_unit=digits,
        timezone=_zone(head),
        effective_from=effective_from,
        precision=precision.normalize(),
        charges=charges,
        fees=fees,
        sla=sla,
        source=source,
    )


def _zone(head: Table) -> ZoneInfo:
    name = head.text("timezone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        head.fail("timezone", f"{name!r} is not a known IANA time zone")


def _charge(t: Table) -> Charge:
    metric = t.text("metric")
    if metric.startswith("module:"):
        module = metric[7:]
        if not MODULE_NAME.match(module):
            t.fail("metric", f"{metric!r}: the module name must be non-empty, lower case, no spaces")
    elif metric not in (*TIME_METRICS, "calls"):
        t.fail("metric", f"{metric!r} is not one of bot_seconds, call_seconds, calls, module:<name>")
    if metric not in TIME_METRICS:
        for key in ("min_seconds", "first_block", "block"):
            t.refuse(key, "only for time metrics (bot_seconds, call_seconds)")
    model = t.choice("model", MODELS, "per_unit")
    price: Decimal | None = None
    package_size: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    if model in ("graduated", "volume"):
        t.refuse("price", f'model = "{model}" prices by tiers; put the prices in tiers')
        if not t.has("tiers"):
            t.fail("tiers", f'required when model = "{model}"')
        tiers = _tiers(t)
    else:
        t.refuse("tiers", 'only for model = "graduated" or "volume"')
        price = t.money("price")
    if model == "package":
        if not t.has("package_size"):
            t.fail("package_size", 'required when model = "package"')
        package_size = t.quantity("package_size", positive=True)
    else:
        t.refuse("package_size", 'only for model = "package"')
    return Charge(
        name=t.text("name"),
        metric=metric,
        outcomes=_outcomes(t),
        min_seconds=t.seconds("min_seconds", 0, 0),
        first_block=t.seconds("first_block", 0, 0),
        block=t.seconds("block", 1, 1),
        unit=t.quantity("unit", Decimal(1), positive=True) or Decimal(1),
        included=t.quantity("included", Decimal(0)) or Decimal(0),
        model=model,  # type: ignore[arg-type]
        price=price,
        package_size=package_size,
        tiers=tiers,
    )


def _outcomes(t: Table) -> tuple[str, ...]:
    if not t.has("outcomes"):
        return DEFAULT_OUTCOMES
    value = t.data["outcomes"]
    if not isinstance(value, list) or not value:
        t.fail("outcomes", f"must be a non-empty list of outcomes ({', '.join(OUTCOMES)})")
    for name in value:
        if name not in OUTCOMES:
            t.fail("outcomes", f"{name!r} is not an outcome ({', '.join(OUTCOMES)})")
    return tuple(dict.fromkeys(value))


def _tiers(t: Table) -> tuple[Tier, ...]:
    raw = t.data["tiers"]
    if not isinstance(raw, list) or not raw:
        t.fail("tiers", "must be a non-empty array of { up_to, price } tables")
    tiers: list[Tier] = []
    for n, item in enumerate(raw, 1):
        tier = Table(t.source, t.key(f"tiers[{n}]"), item, TIER_KEYS)
        if tiers and tiers[-1].up_to is None:
            raise PlanError(t.source, t.key(f"tiers[{n - 1}]"),
                            "a tier without up_to must be the last tier")
        up_to = tier.quantity("up_to", positive=True)
        previous = tiers[-1].up_to if tiers else None
        if up_to is not None and previous is not None and up_to <= previous:
            tier.fail("up_to", f"tiers out of order: {up_to} must be greater than the previous "
                               f"tier's up_to ({previous})")
        price = tier.money("price")
        assert price is not None
        tiers.append(Tier(up_to, price))
    if tiers[-1].up_to is not None:
        raise PlanError(t.source, t.key(f"tiers[{len(tiers)}].up_to"),
                        "the last tier must have no up_to (it prices all units above the "
                        "previous tier)")
    return tuple(tiers)


def _unique_names(source: str, charges: tuple[Charge, ...]) -> None:
    seen: dict[str, int] = {}
    for n, charge in enumerate(charges, 1):
        if charge.name in seen:
            raise PlanError(source, f"charge[{n}].name",
                            f"{charge.name!r} is already the name of charge[{seen[charge.name]}]")
        seen[charge.name] = n


def _fee(t: Table) -> Fee:
    """A fee; a once fee that no period can bill is not refused: PlanSeries.warnings names it."""
    every = t.choice("every", ("period", "once"), "period")
    on = t.day("on")
    if every == "once" and on is None:
        t.fail("on", 'required when every = "once" (the date the fee is due)')
    if every == "period" and on is not None:
        t.fail("on", 'only for every = "once"')
    amount = t.money("amount")
    assert amount is not None
    return Fee(name=t.text("name"), amount=amount, every=every, on=on)  # type: ignore[arg-type]


def _sla(t: Table) -> Sla:
    """The guarantee: its fee, and the answer-rate clause, the satisfaction clause or both.

    A clause is present when any of its keys is; then all its required keys must be given.
    """
    fee = t.money("fee")
    assert fee is not None
    answer = _clause(t, *ANSWER_CLAUSE, "the answer-rate clause")
    csat = _clause(t, *CSAT_CLAUSE, "the satisfaction clause")
    if not answer and not csat:
        raise PlanError(t.source, t.prefix,
                        "a guarantee needs a clause: answer_rate (with max_ring_seconds and "
                        "credit_percent), min_csat (with csat_credit_percent), or both")
    return Sla(
        fee=fee,
        answer_rate=t.ratio("answer_rate", Decimal(0), Decimal(1)) if answer else None,
        max_ring_seconds=t.ratio("max_ring_seconds", Decimal(0), None) if answer else None,
        credit_percent=t.ratio("credit_percent", Decimal(0), HUNDRED) if answer else None,
        ignore_abandoned_under=t.ratio("ignore_abandoned_under", Decimal(0), None, Decimal(0)),
        min_csat=t.decimal("min_csat", Decimal(1), Decimal(5)) if csat else None,
        csat_min_responses=t.count("csat_min_responses", DEFAULT_CSAT_MIN_RESPONSES, 1),
        csat_credit_percent=t.ratio("csat_credit_percent", Decimal(0), HUNDRED) if csat else None,
    )


def _clause(t: Table, required: tuple[str, ...], optional: tuple[str, ...], what: str) -> bool:
    """Whether the table has this clause (any of its keys); PlanError naming the first
    required key missing when it has some of them but not all."""
    given = [key for key in (*required, *optional) if t.has(key)]
    if not given:
        return False
    for key in required:
        if not t.has(key):
            t.fail(key, f"required with {given[0]} ({what} needs {_listed(required)})")
    return True


def _listed(keys: tuple[str, ...]) -> str:
    return keys[0] if len(keys) == 1 else f"{', '.join(keys[:-1])} and {keys[-1]}"
