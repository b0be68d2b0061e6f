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
Measure = Callable[[CallRecord], int]
ZERO = (0, 0)
_SPANS = {"bot_seconds": attrgetter("bot_answered_at", "bot_ended_at"),
          "call_seconds": attrgetter("bot_answered_at", "ended_at")}


class Meter(NamedTuple):
    step: Step
    totals: Callable[[], tuple[int, int]]


def make_meter(sc: ScaledCharge, total: int = 0, charged: int = 0) -> Meter:
    """A meter starting from these running totals (scaled quantity, precision steps)."""
    measure = make_measure(sc)
    included = sc.included
    cost = sc.cost

    def step(call: CallRecord) -> tuple[int, int]:
        nonlocal total, charged
        q = measure(call)
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

    def totals() -> tuple[int, int]:
        return total, charged

    return Meter(step, totals)


def make_measure(sc: ScaledCharge) -> Measure:
    """The call's quantity for this charge in scaled units (Semantics 1)."""
    metric = sc.charge.metric
    if metric in _SPANS:
        return _time_measure(sc, _SPANS[metric])
    outcomes = frozenset(sc.charge.outcomes)
    if metric == "calls":
        one = 10**sc.scale

        def count(call: CallRecord) -> int:
            return one if call.outcome in outcomes else 0

        return count
    return _module_measure(sc, outcomes)


def _time_measure(sc: ScaledCharge, span: Callable[[CallRecord], tuple[float | None, float | None]],
                  ) -> Measure:
    outcomes = frozenset(sc.charge.outcomes)
    min_ms, first_ms, block_ms, factor = sc.min_ms, sc.first_ms, sc.block_ms, sc.ms_factor
    first_q, block_q = first_ms * factor, block_ms * factor

    def seconds(call: CallRecord) -> int:
        if call.outcome not in outcomes:
            return 0
        start, end = span(call)
        if start is None or end is None:
            return 0
        ms = round((end - start) * 1000.0)
        if ms <= 0 or ms < min_ms:
            return 0
        if ms <= first_ms:
            return first_q
        return first_q - (first_ms - ms) // block_ms * block_q

    return seconds


def _module_measure(sc: ScaledCharge, outcomes: frozenset[str]) -> Measure:
    module = sc.charge.module
    scale = sc.scale
    known: dict[Decimal, int] = {}

    def usage(call: CallRecord) -> int:
        if call.outcome not in outcomes:
            return 0
        used = call.modules.get(module)  # type: ignore[arg-type]
        if used is None:
            return 0
        quantity = used.quantity
        scaled = known.get(quantity)
        if scaled is None:
            scaled = known[quantity] = _scaled(quantity, scale, module or "", call.call_id)
            if len(known) > 65536:
                known.clear()
        return scaled

    return usage


def _scaled(quantity: Decimal, scale: int, module: str, call_id: str) -> int:
    shifted = quantity.scaleb(scale)
    if not shifted.is_finite() or shifted < 0 or shifted != shifted.to_integral_value():
        raise RatingError(f"call {call_id}: module {module!r} quantity {quantity} is negative or "
                          f"finer than 10**-{scale}")
    return int(shifted)
