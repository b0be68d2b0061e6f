"""`botmeter calls` output: a table for people, JSON (the spec's record) and CSV for tools."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from ..tracking.record import OUTCOMES, CallRecord, json_number
from .output import write_json


def call_rows(records: Sequence[CallRecord],
              ratings: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    ratings = ratings or {}
    return [r.to_json(dict(ratings.get(r.call_id, {}))) for r in records]


def render_calls(records: Sequence[CallRecord], fmt: str, out: TextIO,
                 ratings: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    if fmt == "json":
        write_json(call_rows(records, ratings), out)
    elif fmt == "csv":
        rows = call_rows(records, ratings)
        fields = list(rows[0]) if rows else list(_EMPTY_FIELDS)
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            row["modules"] = json.dumps(row["modules"], ensure_ascii=False, sort_keys=True)
            writer.writerow(row)
    else:
        Console(file=out, width=170).print(calls_table(records, ratings))


_UNITS = {"seconds": "s", "requests": "req", "characters": "chars", "answers": "ans"}


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def calls_table(records: Sequence[CallRecord],
                ratings: Mapping[str, Mapping[str, Any]] | None = None) -> Table:
    """Calls for people; with `ratings` (call_id -> stored rating) a cost column too."""
    table = Table(title=f"{len(records)} calls", show_lines=False)
    columns = [("offered (UTC)", "left"), ("caller", "left"), ("name", "left"),
               ("outcome", "left"), ("ring s", "right"), ("bot s", "right"),
               ("human s", "right"), ("target", "left"), ("cause", "right"), ("modules", "left")]
    if ratings:
        columns.append(("cost", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name != "modules",  # type: ignore[arg-type]
                         max_width=18 if name == "target" else None, overflow="ellipsis",
                         min_width=16 if name == "modules" else None)
    for r in records:
        modules = ", ".join(f"{m} {json_number(u.quantity)} {_UNITS.get(u.unit, u.unit)}"
                            for m, u in sorted(r.modules.items()))
        answered = {True: " (human)", False: " (no human)", None: ""}[r.transfer_answered]
        cells = [
            (r.to_json()["offered_at"] or "")[:19].replace("T", " "), r.caller_number or "",
            r.caller_name or "", r.outcome + answered,
            _seconds(r.ring_seconds), _seconds(r.bot_seconds), _seconds(r.human_seconds),
            r.transfer_target or "", "" if r.hangup_cause is None else str(r.hangup_cause), modules,
        ]
        if ratings:
            rating = ratings.get(r.call_id) or {}
            cells.append(f"{rating.get('cost') or ''} {rating.get('currency') or ''}".strip())
        table.add_row(*cells)
    return table


def outcome_summary(records: Sequence[CallRecord]) -> Table:
    counts = Counter(r.outcome for r in records)
    bot = Counter()
    for r in records:
        bot[r.outcome] += r.bot_seconds or 0.0
    table = Table(title="Summary per outcome")
    for name in ("outcome", "calls", "share", "bot seconds", "mean bot s"):
        table.add_column(name, justify="left" if name == "outcome" else "right")
    total = len(records) or 1
    for outcome in OUTCOMES:
        n = counts[outcome]
        table.add_row(outcome, str(n), f"{100 * n / total:.0f}%", f"{bot[outcome]:.1f}",
                      f"{bot[outcome] / n:.1f}" if n else "")
    table.add_row("all", str(len(records)), "100%", f"{sum(bot.values()):.1f}", "")
    return table


_EMPTY_FIELDS = (
    "call_id", "linkedid", "caller_number", "caller_name", "dialed_number", "offered_at",
    "bot_answered_at", "bot_ended_at", "transferred_at", "human_answered_at", "ended_at",
    "ring_seconds", "bot_seconds", "human_seconds", "total_seconds", "outcome",
    "transfer_target", "transfer_answered", "hangup_cause", "modules", "plan_id", "cost",
    "currency", "source",
)
