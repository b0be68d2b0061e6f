"""A bucket's usage summary under one plan, and the change between two revisions. Pure.

A summary is complete, never a delta: the calls whose `ended_at` falls in the bucket and that
the plan rates, their counts by outcome, bot seconds, the seconds the plan bills for time,
module usage, and the sum of their per-call amounts (the plan's precision). `calls_sha256`
proves which calls it covers. Its `digest` leaves the revision out, so that the same content
is never queued twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from ..rating import CallCharge, PlanSeries
from ..tracking.record import OUTCOMES, CallRecord
from .buckets import iso_z
from .signing import calls_sha256

Summary = dict[str, Any]

#: the keys a CloudEvents `delta` carries (the summary's additive parts)
DELTA_KEYS = ("calls", "seconds", "modules", "amount", "call_count")


def time_charges(series: PlanSeries) -> frozenset[str]:
    """The names of the plan's time charges (bot_seconds, call_seconds), any version: their
    metered seconds are a call's billable seconds."""
    return frozenset(c.name for v in series.versions for c in v.charges if c.is_time)


def summarize(series: PlanSeries, start: float, end: float, calls: Iterable[CallRecord],
              charges: Mapping[str, CallCharge], revision: int = 1) -> Summary:
    """The summary of the calls (of this bucket) that the plan rated (`charges`)."""
    rated = [c for c in calls if c.call_id in charges]
    counts: dict[str, int] = {"offered": len(rated), "bot_answered": 0}
    counts.update(dict.fromkeys(OUTCOMES, 0))
    bot_ms = 0
    billable = Decimal(0)
    amount = Decimal(0)
    timed = time_charges(series)
    modules: dict[str, list[Any]] = {}  # key -> [quantity, unit]
    for call in rated:
        counts[call.outcome] += 1
        if call.bot_answered_at is not None:
            counts["bot_answered"] += 1
        bot_ms += round((call.bot_seconds or 0.0) * 1000)
        charge = charges[call.call_id]
        amount += charge.amount
        billable += next((line.metered for line in charge.lines if line.charge in timed), 0)
        for name, usage in call.modules.items():
            entry = modules.setdefault(name, [Decimal(0), usage.unit])
            if entry[1] != usage.unit:  # another unit: kept apart, never added up
                entry = modules.setdefault(f"{name}/{usage.unit}", [Decimal(0), usage.unit])
            entry[0] += usage.quantity
    precision = series.versions[-1].precision
    return {
        "plan_id": series.plan_id,
        "bucket_start": iso_z(start),
        "bucket_end": iso_z(end),
        "revision": revision,
        "calls": counts,
        "seconds": {"bot": number(Decimal(bot_ms) / 1000), "billable": number(billable)},
        "modules": {name: {"quantity": number(q), "unit": unit}
                    for name, (q, unit) in sorted(modules.items())},
        "amount": format(amount.quantize(precision), "f"),
        "currency": series.currency,
        "call_count": len(rated),
        "calls_sha256": calls_sha256(c.call_id for c in rated),
    }


def number(value: Decimal) -> int | float:
    """A JSON number for an exact quantity: an int when whole, else the float that prints as
    the same decimal (quantities have at most 6 decimals)."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def digest(summary: Summary) -> str:
    """sha256 of the summary's content, its revision left out."""
    content = {k: v for k, v in summary.items() if k != "revision"}
    return hashlib.sha256(canonical(content)).hexdigest()


def canonical(value: Any) -> bytes:
    """Compact JSON with sorted keys, UTF-8: what is hashed and sent."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def delta(new: Summary, old: Summary | None) -> dict[str, Any]:
    """What changed from the previous delivered revision `old` to `new` (for a meter that adds
    up what it receives); with no previous revision, the summary's own additive parts."""
    if old is None:
        return {key: new[key] for key in DELTA_KEYS}
    old_modules, new_modules = old["modules"], new["modules"]
    modules = {}
    for name in sorted(set(old_modules) | set(new_modules)):
        before, after = old_modules.get(name), new_modules.get(name)
        unit = (after or before)["unit"]
        change = _dec((after or {}).get("quantity", 0)) - _dec((before or {}).get("quantity", 0))
        if change:
            modules[name] = {"quantity": number(change), "unit": unit}
    precision = Decimal(new["amount"]).as_tuple().exponent
    return {
        "calls": {k: new["calls"].get(k, 0) - old["calls"].get(k, 0)
                  for k in sorted(set(new["calls"]) | set(old["calls"]))},
        "seconds": {k: number(_dec(new["seconds"].get(k, 0)) - _dec(old["seconds"].get(k, 0)))
                    for k in sorted(set(new["seconds"]) | set(old["seconds"]))},
        "modules": modules,
        "amount": format((Decimal(new["amount"]) - Decimal(old["amount"])).quantize(
            Decimal(1).scaleb(int(precision))), "f"),
        "call_count": new["call_count"] - old["call_count"],
    }


def _dec(value: int | float | str) -> Decimal:
    """A JSON number back to the exact decimal it was written from."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
