"""The plans' usage of a period summed in SQL, for pricing them without rating each call.

One scan of the period's calls groups them by (offered-at bucket between the plans' version
starts, ended-at bucket between the plans' period bounds, outcome, csat) and sums, per
distinct time meter, the calls' metered milliseconds (min_seconds, first block and blocks
applied per call) and, per distinct SLA, the ring-time counts; module quantities are counted
per distinct quantity text (exact). `rating.usage.period_total` prices each plan from these
sums. Whole milliseconds come from the stored ISO texts as the rating reads them.
"""

from __future__ import annotations

import re
import sqlite3
from bisect import bisect_right
from collections.abc import Sequence
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


def period_usages(conn: sqlite3.Connection, plans: Sequence[PlanSeries], period: str,
                  source: str = "calls") -> dict[str, PeriodUsage]:
    """Each plan's PeriodUsage of `period` (every plan must have a statement for it), by plan
    id. RatingError for a module quantity the rating would refuse."""
    bounds: dict[str, tuple[str, str]] = {}
    for series in plans:
        start, end = period_bounds(period, series.timezone)
        bounds[series.plan_id] = (iso_utc(start), iso_utc(end))
    edges = sorted({t for b in bounds.values() for t in b})
    starts = sorted({iso_utc(x) for s in plans for x in s.starts if x != -inf})
    params: dict[str, Any] = {"first": edges[0], "last": edges[-1]}
    ob = _bucket("offered_at", starts, "s", params)
    eb = _bucket("ended_at", edges, "e", params)
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
    sums = [_metered(spec) for spec in times]
    for fast, ignore in slas:
        sums.append(f"coalesce(sum({_RING} < {ignore}), 0)")
        sums.append(f"coalesce(sum(bot_answered_at IS NOT NULL AND {_RING} <= {fast} AND "
                    f"(outcome <> 'abandoned' OR {_RING} >= {ignore})), 0)")
    where = "ended_at >= :first AND ended_at < :last"
    # module quantities by path when every name is plain (one JSON parse per call and module,
    # in a subquery that is not flattened, so each is parsed once)
    paths = all(_PLAIN.fullmatch(name) for name in modules)
    columns = ""
    if paths:
        for i, name in enumerate(modules):
            params[f"m{i}"] = f'$."{name}"[0]'
            columns += f", (CASE WHEN json_valid(modules) THEN json_extract(modules, :m{i}) END) AS q{i}"
            ok = _OK.format(q=f"q{i}")
            sums.append(f"sum(CASE WHEN {ok} THEN {_MICRO.format(q=f'q{i}')} END)")
            sums.append(f"coalesce(sum(q{i} IS NOT NULL AND NOT ({ok})), 0)")
    groups = conn.execute(
        f"SELECT {ob}, {eb}, outcome, csat, count(*){''.join(', ' + s for s in sums)} "
        f"FROM (SELECT *{columns} FROM {source} WHERE {where} LIMIT -1) "
        "GROUP BY 1, 2, 3, 4", params).fetchall()
    used: list[tuple[int, int, str, str, Decimal, int]] = []
    if paths:
        first = len(sums) - 2 * len(modules)
        if not any(row[5 + first + 2 * i + 1] for row in groups for i in range(len(modules))):
            used = [(row[0], row[1], row[2], name, Decimal(micro).scaleb(-6), 1)
                    for row in groups for i, name in enumerate(modules)
                    if (micro := row[5 + first + 2 * i])]
        else:
            paths = False
    if modules and not paths:
        used = _module_usage(conn, source, ob, eb, where, params)
    return {series.plan_id: _usage(series, period, bounds[series.plan_id], edges, starts,
                                   groups, used, times, slas)
            for series in plans}


#: a module's quantity (decimal text), per call and module
_QUANTITY = """
    SELECT {ob} AS o, {eb} AS e, outcome, usage.key AS module,
           json_extract(usage.value, '$[0]') AS q
    FROM {source}, json_each(CASE WHEN json_valid(calls.modules) THEN calls.modules ELSE '{{}}' END) AS usage
    WHERE {where} AND calls.modules IS NOT NULL"""
#: the quantity in millionths, exact when `_OK`: plain decimal text of at most 15 characters
#: and 6 decimals, so q x 10**6 is a whole number below 10**15 that the double product misses
#: by less than 0.25
_MICRO = "CAST(round({q} * 1000000) AS INTEGER)"
#: module names read by JSON path
_PLAIN = re.compile(r"[A-Za-z0-9_.:-]+")
_OK = ("typeof({q}) = 'text' AND length({q}) <= 15 AND {q} GLOB '[0-9]*' "
       "AND NOT {q} GLOB '*[^0-9.]*' AND {q} NOT LIKE '%.%.%' "
       "AND (instr({q}, '.') = 0 OR length({q}) - instr({q}, '.') <= 6)")


def _module_usage(conn: sqlite3.Connection, source: str, ob: str, eb: str, where: str,
                  params: dict[str, Any]) -> list[tuple[int, int, str, str, Decimal, int]]:
    """(offered bucket, ended bucket, outcome, module, quantity, calls): summed exactly in
    SQL when every quantity is plain decimal text with at most 6 decimals (as `quantity` x 1
    call), else one row per distinct quantity (the rating then refuses the bad one)."""
    rows = (f"WITH m AS MATERIALIZED ({_QUANTITY.format(**locals())}) "
            "SELECT o, e, outcome, module, {} FROM m ")
    summed = conn.execute(
        rows.format(f"sum(NOT ({_OK.format(q='q')})), "
                    f"sum(CASE WHEN {_OK.format(q='q')} THEN {_MICRO.format(q='q')} END)")
        + "GROUP BY 1, 2, 3, 4", params).fetchall()
    if not any(bad for *_, bad, _ in summed):
        return [(o, e, outcome, module, Decimal(micro or 0).scaleb(-6), 1)
                for o, e, outcome, module, _, micro in summed]
    return [(o, e, outcome, module, Decimal(quantity), count)
            for o, e, outcome, module, quantity, count in conn.execute(
                rows.format("q, count(*)") + "GROUP BY 1, 2, 3, 4, 5", params)]


def _usage(series: PlanSeries, period: str, bounds: tuple[str, str], edges: list[str],
           starts: list[str], groups: list[Any], used: list[Any], times: list[TimeSpec],
           slas: list[SlaSpec]) -> PeriodUsage:
    low, high = edges.index(bounds[0]) + 1, edges.index(bounds[1])
    # the version index of each offered-at bucket (-1: before the plan starts); bucket k
    # holds the calls offered in [starts[k - 1], starts[k]), a subset of the plan's starts
    versions = [bisect_right(series.starts, -inf if k == 0 else _epoch(starts[k - 1])) - 1
                for k in range(len(starts) + 1)]
    compiled = [compile_plan(v).charges for v in series.versions]
    quantities: dict[int, list[int]] = {}
    calls = 0
    sla = _sla_spec(series, period)
    base = len(times) + 2 * slas.index(sla) if sla is not None else 0
    offered = ignored = answered = 0
    responses, score = 0, Fraction(0)
    for o, e, outcome, csat_text, count, *sums in groups:
        index = versions[o]
        if not low <= e <= high or index < 0:
            continue
        calls += count
        totals = quantities.setdefault(index, [0] * len(compiled[index]))
        for i, sc in enumerate(compiled[index]):
            charge = sc.charge
            if outcome not in charge.outcomes:
                continue
            if charge.is_time:
                spec = (charge.metric, sc.min_ms, sc.first_ms, sc.block_ms)
                totals[i] += sums[times.index(spec)] * sc.ms_factor
            elif charge.metric == "calls":
                totals[i] += count * 10**sc.scale
        if sla is not None:
            offered += count
            if outcome == "abandoned":
                ignored += sums[base]
            answered += sums[base + 1]
        csat = csat_from_sql(csat_text)
        if csat is not None:
            responses += count
            score += score_on_five(None, csat) * count  # type: ignore[arg-type]
    for o, e, outcome, module, quantity, count in used:
        index = versions[o]
        if not low <= e <= high or index < 0:
            continue
        totals = quantities[index]
        for i, sc in enumerate(compiled[index]):
            if sc.charge.module == module and outcome in sc.charge.outcomes:
                totals[i] += _scaled(quantity, 10**sc.scale, module, "?") * count
    return PeriodUsage({i: tuple(q) for i, q in quantities.items()}, calls,
                       (offered, offered - ignored, answered) if sla is not None else None,
                       (responses, score))


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
