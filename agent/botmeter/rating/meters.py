"""One charge's meter for one period: meters the next call and prices it at the margin.

A meter is a pair of closures over the running totals (total metered, total charged), so the
hot path touches only local cells. `step(call)` returns `(quantity, amount)`: the call's
metered quantity in scaled units and its marginal amount in precision steps.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from operator import attrgetter
from typing import NamedTuple

from ..tracking.record import CallRecord
from .errors import RatingError
from .scaled import ScaledCharge

Step = Callable[[CallRecord], tuple[int, int]]
ZERO = (0, 0)
_SPANS = {"bot_seconds": attrgetter("bot_answered_at", "bot_ended_at"),
          "call_seconds": attrgetter("bot_answered_at", "ended_at")}


class Meter(NamedTuple):
    step: Step
    totals: Callable[[], tuple[int, int]]


def make_meter(sc: ScaledCharge, total: int = 0, charged: int = 0) -> Meter:
    """A meter starting from these running totals (scaled quantity, precision steps).

    The measure is inlined in each kind of step (time, count, module): this is the hot path.
    """
    metric = sc.charge.metric
    if metric in _SPANS:
        return _time_meter(sc, _SPANS[metric], total, charged)
    if metric == "calls":
        return _count_meter(sc, total, charged)
    return _module_meter(sc, total, charged)


def _time_meter(sc: ScaledCharge, span: Callable[[CallRecord], tuple[float | None, float | None]],
                total: int, charged: int) -> Meter:
    """Time metrics: whole milliseconds, min_seconds, first block, then blocks (rounded up)."""
    outcomes = frozenset(sc.charge.outcomes)
    min_ms, first_ms, block_ms, factor = sc.min_ms, sc.first_ms, sc.block_ms, sc.ms_factor
    first_q, block_q = first_ms * factor, block_ms * factor
    included, cost = sc.included, sc.cost

    def step(call: CallRecord) -> tuple[int, int]:
        nonlocal total, charged
        if call.outcome not in outcomes:
            return ZERO
        start, end = span(call)
        if start is None or end is None:
            return ZERO
        ms = round((end - start) * 1000.0)
        if ms <= 0 or ms < min_ms:
            return ZERO
        q = first_q if ms <= first_ms else first_q - (first_ms - ms) // block_ms * block_q
        total += q
        billed = total - included
        if billed <= 0:
            return (q, 0)
        now = cost(billed)
        amount = now - charged
        charged = now
        return (q, amount)

    return Meter(step, lambda: (total, charged))


def _count_meter(sc: ScaledCharge, total: int, charged: int) -> Meter:
    """`calls`: each call with a listed outcome counts one."""
    outcomes = frozenset(sc.charge.outcomes)
    q = 10**sc.scale
    included, cost = sc.included, sc.cost

    def step(call: CallRecord) -> tuple[int, int]:
        nonlocal total, charged
        if call.outcome not in outcomes:
            return ZERO
        total += q
        billed = total - included
        if billed <= 0:
            return (q, 0)
        now = cost(billed)
        amount = now - charged
        charged = now
        return (q, amount)

    return Meter(step, lambda: (total, charged))


def _module_meter(sc: ScaledCharge, total: int, charged: int) -> Meter:
    """`module:<name>`: the call's reported quantity of that module."""
    outcomes = frozenset(sc.charge.outcomes)
    module = sc.charge.module or ""
    per_unit = 10**sc.scale
    included, cost = sc.included, sc.cost

    def step(call: CallRecord) -> tuple[int, int]:
        nonlocal total, charged
        if call.outcome not in outcomes:
            return ZERO
        used = call.modules.get(module)
        if used is None:
            return ZERO
        q = _scaled(used.quantity, per_unit, module, call.call_id)
        if not q:
            return ZERO
        total += q
        billed = total - included
        if billed <= 0:
            return (q, 0)
        now = cost(billed)
        amount = now - charged
        charged = now
        return (q, amount)

    return Meter(step, lambda: (total, charged))


def _scaled(quantity: Decimal, per_unit: int, module: str, call_id: str) -> int:
    """A module quantity in scaled units, exactly, or RatingError."""
    try:
        numerator, denominator = quantity.as_integer_ratio()
    except (ValueError, OverflowError):
        numerator, denominator = -1, 1
    if numerator < 0 or per_unit % denominator:
        raise RatingError(f"call {call_id}: module {module!r} quantity {quantity} is not a "
                          f"non-negative multiple of {Decimal(1) / per_unit}")
    return numerator * (per_unit // denominator)
