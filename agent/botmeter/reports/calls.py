"""`botmeter calls` output: a table for people, JSON (the spec's record) and CSV for tools.

Object values are JSON text in CSV cells: `modules`, and `csat` (`{"score": 4, "scale": 5}`,
an empty cell without a rating); the table shows a rating as `4/5`, and a session column when
a listed call has a bot session id (the table is then as much wider).

Module quantities are printed exactly, digit for digit from their Decimal (never through
float): JSON and CSV write them as JSON numbers with `json_text`, which writes what
`json.dumps` writes and a Decimal as its exact digits.
"""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.table import Table


from ..tracking.record import FIELDS, OUTCOMES, CallRecord, number_text


def call_rows(records: Sequence[CallRecord],
              ratings: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    ratings = ratings or {}
    return [r.to_json(dict(ratings.get(r.call_id, {}))) for r in records]


def render_calls(records: Sequence[CallRecord], fmt: str, out: TextIO,
                 ratings: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    if fmt == "json":
        out.write(json_text(call_rows(records, ratings), indent=1))
        out.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=[f.name for f in FIELDS], lineterminator="\n")
        writer.writeheader()
        for row in call_rows(records, ratings):
            row["modules"] = json_text(row["modules"])
            if row["csat"] is not None:
                row["csat"] = json_text(row["csat"])
            writer.writerow({key: _csv_value(value) for key, value in row.items()})
    else:
        from rich.console import Console  # only people's tables need rich

        Console(file=out, width=table_width(records)).print(calls_table(records, ratings))


def _csv_value(value: Any) -> Any:
    """Booleans as JSON writes them (`true`, `false`), not as Python does."""
    return ("true" if value else "false") if isinstance(value, bool) else value


#: C0 and C1 control characters and DEL: shown as U+FFFD in tables, never sent to a terminal
#: (a caller name comes from outside: a SIP trunk can put escape sequences in it)
_CONTROLS = {c: "\ufffd" for c in (*range(0x20), *range(0x7f, 0xa0))}


def _safe(text: str) -> str:
    return text.translate(_CONTROLS)


_UNITS = {"seconds": "s", "requests": "req", "characters": "chars", "answers": "ans"}


#: the width tables of calls are printed at (`botmeter calls`, the demo): every column in
#: full; the session column, shown when a listed call has a session id, widens it by its own
TABLE_WIDTH = 170
SESSION_WIDTH = 16


def table_width(records: Sequence[CallRecord]) -> int:
    """The width to print `calls_table(records)` at."""
    return TABLE_WIDTH + (SESSION_WIDTH + 3 if any(r.bot_session_id for r in records) else 0)


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def calls_table(records: Sequence[CallRecord],
                ratings: Mapping[str, Mapping[str, Any]] | None = None) -> Table:
    """Calls for people; with `ratings` (call_id -> stored rating) a cost column too, and a
    session column when any of the calls has a bot session id."""
    from rich.table import Table

    table = Table(title=f"{len(records)} calls", show_lines=False)
    sessions = any(r.bot_session_id for r in records)
    columns = [("offered (UTC)", "left"), ("caller", "left"), ("name", "left"),
               *([("session", "left")] if sessions else []),
               ("outcome", "left"), ("ring s", "right"), ("bot s", "right"),
               ("human s", "right"), ("target", "left"), ("cause", "right"), ("csat", "right"),
               ("modules", "left")]
    if ratings:
        columns.append(("cost", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name != "modules",  # type: ignore[arg-type]
                         max_width={"target": 18, "name": 24, "caller": 20,
                                    "session": SESSION_WIDTH}.get(name),
                         overflow="ellipsis",
                         min_width=16 if name == "modules" else None)
    for r in records:
        modules = ", ".join(f"{m} {number_text(u.quantity)} {_UNITS.get(u.unit, u.unit)}"
                            for m, u in sorted(r.modules.items()))
        answered = {True: " (human)", False: " (no human)", None: ""}[r.transfer_answered]
        cells = [
            (r.to_json()["offered_at"] or "")[:19].replace("T", " "), _safe(r.caller_number or ""),
            _safe(r.caller_name or ""), *([_safe(r.bot_session_id or "")] if sessions else []),
            r.outcome + answered,
            _seconds(r.ring_seconds), _seconds(r.bot_seconds), _seconds(r.human_seconds),
            _safe(r.transfer_target or ""), "" if r.hangup_cause is None else str(r.hangup_cause),
            "" if r.csat is None else f"{r.csat.score}/{r.csat.scale}", _safe(modules),
        ]
        if ratings:
            rating = ratings.get(r.call_id) or {}
            cells.append(f"{rating.get('cost') or ''} {rating.get('currency') or ''}".strip())
        table.add_row(*cells)
    return table


def outcome_summary(records: Sequence[CallRecord]) -> Table:
    counts = Counter(r.outcome for r in records)
    bot: defaultdict[str, float] = defaultdict(float)
    for r in records:
        bot[r.outcome] += r.bot_seconds or 0.0
    from rich.table import Table

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



def json_text(value: Any, indent: int | None = None) -> str:
    """`value` as JSON text, as `json.dumps(value, ensure_ascii=False, indent=indent)` writes
    it, except that a Decimal is written as a number from its exact digits."""
    parts: list[str] = []
    _encode(value, parts, indent, "\n")
    return "".join(parts)


def _encode(value: Any, parts: list[str], indent: int | None, newline: str) -> None:
    if isinstance(value, str):
        parts.append(encode_basestring(value))
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, int):
        parts.append(int.__repr__(value))
    elif isinstance(value, float):
        parts.append(float.__repr__(value) if math.isfinite(value)
                     else "NaN" if value != value else "Infinity" if value > 0 else "-Infinity")
    elif isinstance(value, Decimal):
        parts.append(format(value, "f"))
    elif isinstance(value, Mapping | list | tuple):
        _encode_container(value, parts, indent, newline)
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode_container(value: Mapping[str, Any] | list[Any] | tuple[Any, ...], parts: list[str],
                      indent: int | None, newline: str) -> None:
    mapping = isinstance(value, Mapping)
    opening, closing = "{}" if mapping else "[]"
    if not value:
        parts.append(opening + closing)
        return
    inner = newline + " " * indent if indent is not None else ""
    separator = "," + inner if indent is not None else ", "
    parts.append(opening + inner)
    items = value.items() if isinstance(value, Mapping) else enumerate(value)
    for n, (key, item) in enumerate(items):
        if n:
            parts.append(separator)
        if mapping:
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            parts.append(encode_basestring(key) + ": ")
        _encode(item, parts, indent, inner)
    parts.append((newline if indent is not None else "") + closing)
