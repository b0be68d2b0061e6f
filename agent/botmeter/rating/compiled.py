"""A plan version ready for the hot path: scaled charges and the per-call result cache."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

from .plan import PlanVersion
from .scaled import ScaledCharge, places, scale_plan

CACHE_LIMIT = 1 << 16


class ChargeLine(NamedTuple):
    """One charge's share of one call."""

    charge: str
    metered: Decimal  # the call's metered quantity in the metric's unit (after min/blocks)
    amount: Decimal   # its marginal amount, at the plan's precision


class CallCharge(NamedTuple):
    """A call's rating, for storing with the call: amount = sum of the lines' amounts."""

    plan_id: str
    currency: str
    amount: Decimal
    lines: tuple[ChargeLine, ...]


Key = tuple[tuple[int, int], ...]


class CompiledPlan:
    """The integer form of a plan version, plus caches of immutable results.

    Results depend only on the integers a call's meters return, so equal integers
    share one CallCharge (values are immutable; the caches only save allocations).
    """

    def __init__(self, version: PlanVersion) -> None:
        self.version = version
        self.charges: tuple[ScaledCharge, ...] = scale_plan(version)
        self.digits = places(version.precision)
        self.results: dict[Key, CallCharge] = {}
        self._amounts: dict[int, Decimal] = {}
        self._metered: list[dict[int, Decimal]] = [{} for _ in self.charges]
        self._names = tuple(sc.charge.name for sc in self.charges)
        self._indexes = range(len(self.charges))

    def amount(self, steps: int) -> Decimal:
        """An integer count of precision steps as a Decimal amount."""
        value = self._amounts.get(steps)
        if value is None:
            if len(self._amounts) > CACHE_LIMIT:
                self._amounts.clear()
            value = self._amounts[steps] = Decimal(steps).scaleb(-self.digits)
        return value

    def metered(self, index: int, scaled: int) -> Decimal:
        cache = self._metered[index]
        value = cache.get(scaled)
        if value is None:
            if len(cache) > CACHE_LIMIT:
                cache.clear()
            value = cache[scaled] = self.charges[index].to_metric(scaled)
        return value

    def build(self, key: Key) -> CallCharge:
        """The CallCharge for one call's meter readings (and remember it)."""
        amount, metered = self.amount, self.metered
        lines = tuple([ChargeLine(name, metered(i, q), amount(a))
                       for i, name, (q, a) in zip(self._indexes, self._names, key, strict=True)])
        result = CallCharge(self.version.plan_id, self.version.currency,
                            amount(sum([a for _, a in key])), lines)
        if len(self.results) > CACHE_LIMIT:
            self.results.clear()
        self.results[key] = result
        return result


@lru_cache(maxsize=128)
def compile_plan(version: PlanVersion) -> CompiledPlan:
    """The compiled form of a plan version (cached)."""
    return CompiledPlan(version)
