"""The plans' usage of a period summed in SQL, for pricing them without rating each call.

One scan of the period's calls groups them by (offered-at bucket between the plans' version
starts, ended-at bucket between the plans' period bounds, outcome, csat) and sums, per
distinct time meter, the calls' metered milliseconds (min_seconds, first block and blocks
applied per call) and, per distinct SLA, the ring-time counts; module quantities are counted
per distinct quantity text (exact). `rating.usage.period_total` prices each plan from these
sums. Whole milliseconds come from the stored ISO texts as the rating reads them.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from math import inf
from typing import Any

from ..rating import PlanSeries, period_bounds
from ..rating.compiled import compile_plan
from ..rating.meters import _scaled
from ..rating.sla import ring_thresholds, score_on_five
from ..rating.usage import PeriodUsage
from ..storage.columns import csat_from_sql
from ..storage.rollup_query import Range, day_of, totals
from ..storage.rollups import CSAT, MICRO, MODULES, QUANTITY_OK, USAGE, Family
from ..tracking.record import iso_utc

#: whole milliseconds from one stored ISO time to another (NULL when either is NULL)
_MS = "CAST(round((julianday({end}) - julianday({start})) * 86400000) AS INTEGER)"
_SPANS = {"bot_seconds": _MS.format(start="bot_answered_at", end="bot_ended_at"),
          "call_seconds": _MS.format(start="bot_answered_at", end="ended_at")}
_RING = "max(0, " + _MS.format(start="offered_at",
                               end="coalesce(bot_answered_at, ended_at)") + ")"

TimeSpec = tuple[str, int, int, int]  # metric, min_ms, first_ms, block_ms
SlaSpec = tuple[int, int]  # fast_ms, ignore_ms


def _bucket(column: str, edges: Sequence[str], name: str, params: dict[str, Any]) -> str:
    """SQL: how many of the edges are <= column."""
    terms = []
    for i, edge in enumerate(edges):
        params[f"{name}{i}"] = edge
        terms.append(f"({column} >= :{name}{i})")
    return "(" + " + ".join(terms) + ")" if terms else "0"


def _metered(spec: TimeSpec) -> str:
    metric, min_ms, first_ms, block_ms = spec
    ms = _SPANS[metric]
    return (f"coalesce(sum(CASE WHEN {ms} <= 0 OR {ms} < {min_ms} THEN 0 "
            f"WHEN {ms} <= {first_ms} THEN {first_ms} "
            f"ELSE {first_ms} + ({ms} - {first_ms} + {block_ms - 1}) / {block_ms} * {block_ms}"
            " END), 0)")


def _sla_spec(series: PlanSeries, period: str) -> SlaSpec | None:
    sla = series.fee_version(period).sla
    return ring_thresholds(sla) if sla is not None and sla.has_answer_rate else None


@dataclass(slots=True)
class Sums:
    """A period's calls summed per (offered-at bucket, ended-at bucket, outcome): calls;
    metered milliseconds per time meter; (ignored, answered) per SLA; csat texts and counts
    per (offered, ended) bucket; module quantities."""

    calls: dict[tuple[int, int, str], int] = field(default_factory=dict)
    metered: dict[tuple[int, int, str], list[int]] = field(default_factory=dict)
    sla: dict[tuple[int, int, str], list[int]] = field(default_factory=dict)
    csat: list[tuple[int, int, str | None, int]] = field(default_factory=list)
    used: list[tuple[int, int, str, str, Decimal, int]] = field(default_factory=list)


def period_usages(conn: sqlite3.Connection, plans: Sequence[PlanSeries],
                  period: str) -> dict[str, PeriodUsage]:
    """Each plan's PeriodUsage of `period` (every plan must have a statement for it), by plan
    id. RatingError for a module quantity the rating would refuse."""
    bounds: dict[str, tuple[str, str]] = {}
    for series in plans:
        start, end = period_bounds(period, series.timezone)
        bounds[series.plan_id] = (iso_utc(start), iso_utc(end))
    edges = sorted({t for b in bounds.values() for t in b})
    starts = sorted({iso_utc(x) for s in plans for x in s.starts if x != -inf})
    times: list[TimeSpec] = []
    modules: list[str] = []
    for series in plans:
        for version in series.versions:
            for sc in compile_plan(version).charges:
                charge = sc.charge
                if charge.is_time:
                    spec = (charge.metric, sc.min_ms, sc.first_ms, sc.block_ms)
                    if spec not in times:
                        times.append(spec)
                elif charge.module is not None and charge.module not in modules:
                    modules.append(charge.module)
    slas = list(dict.fromkeys(s for s in (_sla_spec(p, period) for p in plans) if s))
    if _whole_seconds(times, slas):
        sums = _rolled_sums(conn, edges, starts, times, slas, bool(modules))
    else:
        sums = _raw_sums(conn, edges, starts, times, slas, modules)
    return {series.plan_id: _usage(series, period, bounds[series.plan_id], edges, starts,
                                   sums, times, slas)
            for series in plans}


def _whole_seconds(times: list[TimeSpec], slas: list[SlaSpec]) -> bool:
    """Whether every meter's minimum, first block and block (or no block), and every SLA
    threshold, is whole seconds: the roll-up's seconds then price each call exactly."""
    return (all(m % 1000 == 0 and f % 1000 == 0 and (b == 1 or b % 1000 == 0)
                for _, m, f, b in times)
            and all(fast % 1000 == 0 and ignore % 1000 == 0 for fast, ignore in slas))


def _rolled_sums(conn: sqlite3.Connection, edges: list[str], starts: list[str],
                 times: list[TimeSpec], slas: list[SlaSpec], modules: bool) -> Sums:
    """Sums from the roll-ups, the days holding a period bound or a version start (not at
    midnight UTC) from the calls."""
    params: dict[str, Any] = {}
    # the bucket of a clean day (it holds no edge): the edges at or before its midnight
    keys = {"offered_day": (_bucket("offered_day || 'T00:00:00.000Z'", starts, "s", params),
                            _bucket("calls.offered_at", starts, "s", params)),
            "ended_day": (_bucket("ended_day || 'T00:00:00.000Z'", edges, "e", params),
                          _bucket("calls.ended_at", edges, "e", params))}
    span = Range("ended_at", edges[0], edges[-1],
                 dirty=frozenset(day_of(e) for e in edges if e[10:] != _MIDNIGHT),
                 dirty_offered=frozenset(day_of(s) for s in starts if s[10:] != _MIDNIGHT))

    def bucketed(family: Family, by: tuple[str, ...]) -> list[tuple[Any, ...]]:
        rolled, raw = totals(conn, family, by, span, keys, params)
        return rolled + raw

    sums = Sums()
    for o, e, outcome, metric, second, n, whole, ms in bucketed(
            USAGE, ("offered_day", "ended_day", "outcome", "metric", "sec")):
        key = (o, e, outcome)
        if metric.startswith("ring"):
            sums.calls[key] = sums.calls.get(key, 0) + n
            counts = sums.sla.setdefault(key, [0] * (2 * len(slas)))
            for i, (fast, ignore) in enumerate(slas):
                short = _below(second, n, whole, ignore)
                counts[2 * i] += short
                if metric == "ring_a" and 0 <= second <= fast // 1000:
                    counts[2 * i + 1] += n if outcome != "abandoned" else n - short
        else:
            metered = sums.metered.setdefault(key, [0] * len(times))
            for i, spec in enumerate(times):
                if spec[0] == _METRICS[metric]:
                    metered[i] += _metered_seconds(spec, second, n, whole, ms)
    sums.csat = [(o, e, text, n) for o, e, _, text, n in
                 bucketed(CSAT, ("offered_day", "ended_day", "outcome", "csat"))]
    if modules:
        rows = bucketed(MODULES, ("offered_day", "ended_day", "outcome", "module", "unit"))
        if any(bad for *_, bad in rows):
            sums.used = _module_usage(conn, keys["offered_day"][1], keys["ended_day"][1],
                                      "calls.ended_at >= :first AND calls.ended_at < :last",
                                      {"first": edges[0], "last": edges[-1]})
        else:
            sums.used = [(o, e, outcome, module, Decimal(ok).scaleb(-6), 1)
                         for o, e, outcome, module, _, _, _, ok, _ in rows if ok]
    return sums


_MIDNIGHT = "T00:00:00.000Z"
#: the roll-up's duration metrics and the rating's time metrics they measure
_METRICS = {"bot": "bot_seconds", "call": "call_seconds"}


def _below(second: int, n: int, whole: int, threshold_ms: int) -> int:
    """Of n calls of one rounded-up second (-1: unknown), how many are < threshold_ms (whole
    seconds): all below its second, those not exactly whole in it, none above."""
    if second < 0:
        return 0
    limit = threshold_ms // 1000
    return n if second < limit else n - whole if second == limit else 0


def _metered_seconds(spec: TimeSpec, second: int, n: int, whole: int, ms: int) -> int:
    """The metered milliseconds of n calls lasting (second - 1, second] seconds (`whole` of
    them exactly `second`, `ms` in all) under a meter of whole seconds: nothing under the
    minimum, the first block, then whole blocks (or the milliseconds, without blocks)."""
    _, min_ms, first_ms, block_ms = spec
    if second <= 0:
        return 0
    charged = n - _below(second, n, whole, min_ms)
    if not charged:
        return 0
    if second * 1000 <= first_ms:
        return charged * first_ms
    if block_ms == 1:  # no blocks: the milliseconds of the calls charged
        return ms if charged == n else charged * second * 1000
    blocks = -(-(second * 1000 - first_ms) // block_ms)
    return charged * (first_ms + blocks * block_ms)


def _raw_sums(conn: sqlite3.Connection, edges: list[str], starts: list[str],
              times: list[TimeSpec], slas: list[SlaSpec], modules: list[str]) -> Sums:
    """Sums of the period's calls read one by one (meters or SLA thresholds in fractions of
    a second)."""
    params: dict[str, Any] = {"first": edges[0], "last": edges[-1]}
    ob = _bucket("offered_at", starts, "s", params)
    eb = _bucket("ended_at", edges, "e", params)
    sums = [_metered(spec) for spec in times]
    for fast, ignore in slas:
        sums.append(f"coalesce(sum({_RING} < {ignore}), 0)")
        sums.append(f"coalesce(sum(bot_answered_at IS NOT NULL AND {_RING} <= {fast} AND "
                    f"(outcome <> 'abandoned' OR {_RING} >= {ignore})), 0)")
    where = "ended_at >= :first AND ended_at < :last"
    groups = conn.execute(
        f"SELECT {ob}, {eb}, outcome, csat, count(*){''.join(', ' + s for s in sums)} "
        f"FROM (SELECT * FROM calls WHERE {where} LIMIT -1) "
        "GROUP BY 1, 2, 3, 4", params).fetchall()
    out = Sums()
    for o, e, outcome, csat, count, *values in groups:
        key = (o, e, outcome)
        out.calls[key] = out.calls.get(key, 0) + count
        metered = out.metered.setdefault(key, [0] * len(times))
        for i in range(len(times)):
            metered[i] += values[i]
        counts = out.sla.setdefault(key, [0] * (2 * len(slas)))
        for i in range(2 * len(slas)):
            counts[i] += values[len(times) + i]
        if csat is not None:
            out.csat.append((o, e, csat, count))
    if modules:
        out.used = _module_usage(conn, ob, eb, where, params)
    return out


#: a module's quantity (decimal text), per call and module; its millionths are exact when
#: QUANTITY_OK (plain decimal text of at most 15 characters and 6 decimals, so q x 10**6 is a
#: whole number below 10**15 that the double product misses by less than 0.25)
_QUANTITY = """
    SELECT {ob} AS o, {eb} AS e, outcome, usage.key AS module,
           json_extract(usage.value, '$[0]') AS q
    FROM calls, json_each(CASE WHEN json_valid(calls.modules) THEN calls.modules ELSE '{{}}' END) AS usage
    WHERE {where} AND calls.modules IS NOT NULL"""
def _module_usage(conn: sqlite3.Connection, ob: str, eb: str, where: str,
                  params: dict[str, Any]) -> list[tuple[int, int, str, str, Decimal, int]]:
    """(offered bucket, ended bucket, outcome, module, quantity, calls): summed exactly in
    SQL when every quantity is plain decimal text with at most 6 decimals (as `quantity` x 1
    call), else one row per distinct quantity (the rating then refuses the bad one)."""
    rows = (f"WITH m AS MATERIALIZED ({_QUANTITY.format(**locals())}) "
            "SELECT o, e, outcome, module, <sums> FROM m ")
    ok = QUANTITY_OK.format(q="q")
    summed = conn.execute(
        rows.replace("<sums>", f"sum(NOT ({ok})), "
                               f"sum(CASE WHEN {ok} THEN {MICRO.format(q='q')} END)")
        + "GROUP BY 1, 2, 3, 4", params).fetchall()
    if not any(bad for *_, bad, _ in summed):
        return [(o, e, outcome, module, Decimal(micro or 0).scaleb(-6), 1)
                for o, e, outcome, module, _, micro in summed]
    return [(o, e, outcome, module, Decimal(quantity), count)
            for o, e, outcome, module, quantity, count in conn.execute(
                rows.replace("<sums>", "q, count(*)") + "GROUP BY 1, 2, 3, 4, 5", params)]


def _usage(series: PlanSeries, period: str, bounds: tuple[str, str], edges: list[str],
           starts: list[str], sums: Sums, times: list[TimeSpec],
           slas: list[SlaSpec]) -> PeriodUsage:
    low, high = edges.index(bounds[0]) + 1, edges.index(bounds[1])
    # the version index of each offered-at bucket (-1: before the plan starts); bucket k
    # holds the calls offered in [starts[k - 1], starts[k]), a subset of the plan's starts
    versions = [bisect_right(series.starts, -inf if k == 0 else _epoch(starts[k - 1])) - 1
                for k in range(len(starts) + 1)]
    compiled = [compile_plan(v).charges for v in series.versions]

    def version(o: int, e: int) -> int | None:
        index = versions[o]
        return index if low <= e <= high and index >= 0 else None

    quantities: dict[int, list[int]] = {}
    calls = 0
    sla = _sla_spec(series, period)
    base = 2 * slas.index(sla) if sla is not None else 0
    offered = ignored = answered = 0
    for (o, e, outcome), count in sums.calls.items():
        index = version(o, e)
        if index is None:
            continue
        calls += count
        totals = quantities.setdefault(index, [0] * len(compiled[index]))
        metered = sums.metered.get((o, e, outcome), [0] * len(times))
        for i, sc in enumerate(compiled[index]):
            charge = sc.charge
            if outcome not in charge.outcomes:
                continue
            if charge.is_time:
                spec = (charge.metric, sc.min_ms, sc.first_ms, sc.block_ms)
                totals[i] += metered[times.index(spec)] * sc.ms_factor
            elif charge.metric == "calls":
                totals[i] += count * 10**sc.scale
        if sla is not None:
            counts = sums.sla.get((o, e, outcome), [0] * (2 * len(slas)))
            offered += count
            if outcome == "abandoned":
                ignored += counts[base]
            answered += counts[base + 1]
    responses, score = 0, Fraction(0)
    for o, e, text, count in sums.csat:
        csat = csat_from_sql(text)
        if csat is not None and version(o, e) is not None:
            responses += count
            score += score_on_five(None, csat) * count  # type: ignore[arg-type]
    for o, e, outcome, module, quantity, count in sums.used:
        index = version(o, e)
        if index is None:
            continue
        totals = quantities.setdefault(index, [0] * len(compiled[index]))
        for i, sc in enumerate(compiled[index]):
            if sc.charge.module == module and outcome in sc.charge.outcomes:
                totals[i] += _scaled(quantity, 10**sc.scale, module, "?") * count
    return PeriodUsage({i: tuple(q) for i, q in quantities.items()}, calls,
                       (offered, offered - ignored, answered) if sla is not None else None,
                       (responses, score))


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
