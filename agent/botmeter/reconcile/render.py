"""The reconciliation as JSON, CSV or a terminal table, written as the lines are read.

JSON and CSV list every line (they are for machines and spreadsheets); the table and the HTML
annex list the lines that are not a `match` unless asked for all of them (`--all`): a month's
matches are a million rows nobody reads in a terminal or prints.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from itertools import islice
from typing import Any, TextIO

from .reconciler import CLASSES, Reconciliation
from .words import words

NOT_MATCH = tuple(c for c in CLASSES if c != "match")


#: lines the terminal table shows at most by default (CSV and JSON have them all)
TABLE_LIMIT = 100


def render(result: Reconciliation, fmt: str, lang: str, out: TextIO, *, all_lines: bool,
           limit: int = TABLE_LIMIT) -> None:
    if fmt == "json":
        write_json(result, out)
    elif fmt == "csv":
        write_csv(result, out)
    elif fmt == "html":
        from .render_html import write_html

        write_html(result, lang, out, all_lines=all_lines)
    else:
        write_table(result, lang, out, all_lines=all_lines, limit=limit)


def write_json(result: Reconciliation, out: TextIO) -> None:
    """The spec's object, its `lines` streamed one by one."""
    head = json.dumps(result.summary(), ensure_ascii=False, indent=2)
    out.write(head[:-2].rstrip() + ',\n  "lines": [')
    first = True
    for line in result.lines_json():
        out.write(("\n    " if first else ",\n    ") + line)
        first = False
    out.write("\n  ]\n}\n" if not first else "]\n}\n")


def write_csv(result: Reconciliation, out: TextIO) -> None:
    """One row per line (`Reconciliation.columns()`); the totals are in the JSON and the table.
    Text a spreadsheet would run as a formula (=, +, -, @ first) gets a leading quote, but
    for a number (a caller's +86 139-0000-1111, a negative amount), in any column: a caller
    number is whatever the vendor or the calling party wrote."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(result.columns()))
    for row in result.rows():
        if any(isinstance(v, str) and v[:1] in _FORMULA and not _NUMBER.fullmatch(v)
               for v in row):
            row = tuple("'" + v if isinstance(v, str) and v[:1] in _FORMULA
                        and not _NUMBER.fullmatch(v) else v for v in row)
        writer.writerow(row)


_FORMULA = ("=", "+", "-", "@")
#: a number as written (signs, digits, spaces, dashes, brackets, a point): runs nothing
_NUMBER = re.compile(r"[+-]?[0-9][0-9 ().-]*")


def listed_classes(all_lines: bool) -> tuple[str, ...]:
    """The classes the table and the HTML list: every one, or all but `match`."""
    return CLASSES if all_lines else NOT_MATCH


def listed(result: Reconciliation, all_lines: bool) -> Iterator[dict[str, Any]]:
    """The lines the table and the HTML show, as flat dicts of `Reconciliation.columns()`."""
    names = list(result.columns())
    for row in result.rows(listed_classes(all_lines)):
        yield dict(zip(names, row, strict=True))


def write_table(result: Reconciliation, lang: str, out: TextIO, *, all_lines: bool,
                limit: int = TABLE_LIMIT) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    w = words(lang)
    console = Console(file=out, width=160, no_color=not out.isatty(), highlight=False)
    head = Table(title=w["title"], show_header=False, title_justify="left")
    head.add_column()
    head.add_column()
    for key, value in (("period", result.period), ("plan", result.plan_id),
                       ("currency", result.currency), ("invoice", result.invoice),
                       ("vendor_lines", str(result.vendor_lines))):
        head.add_row(w[key], Text(value))
    console.print(head)
    totals = Table(show_header=True)
    for key, right in (("class", False), ("lines", True), ("vendor_amount", True),
                       ("botmeter_amount", True)):
        totals.add_column(w[key], justify="right" if right else "left")
    summary = result.summary()
    for name in CLASSES:
        row = summary["classes"][name]
        totals.add_row(w[name], str(row["lines"]), row["vendor_amount"], row["botmeter_amount"])
    console.print(totals)
    console.print(f'{w["disputed_amount"]}: {summary["disputed_amount"]} {result.currency}')
    lines = Table(title=w["matches_listed" if all_lines else "lines_listed"],
                  title_justify="left")
    for key in ("class", "line", "caller", "started_at", "vendor_duration", "vendor_amount",
                "call_id", "botmeter_duration", "botmeter_amount"):
        lines.add_column(w[key])
    listed_count = sum(c.lines for name, c in result.classes.items()
                       if all_lines or name != "match")
    for row in islice(listed(result, all_lines), limit):
        duration = row["seconds"] or (f'{row["minutes"]} min' if row["minutes"] else None)
        lines.add_row(*(Text("" if v is None else str(v)) for v in (
            w[row["class"]], row["line"], row["caller_number"] or row["botmeter_caller_number"],
            row["started_at"] or row["bot_answered_at"], duration, row["vendor_amount"],
            row["call_id"], row["botmeter_seconds"], row["botmeter_amount"])))
    console.print(lines)
    if listed_count > limit:
        console.print(w["more_lines"].format(n=listed_count - limit))
    if not all_lines and result.classes["match"].lines:
        console.print(w["matches_hidden"].format(n=result.classes["match"].lines))
    if result.problems.count:
        console.print(w["problems"] + ":")
        for problem in result.problems.items:
            console.print(Text(f"  {problem}"))
        if result.problems.count > len(result.problems.items):
            console.print(w["problem_count"].format(n=result.problems.count,
                                                     k=len(result.problems.items)))
