"""`botmeter bill` and `botmeter plans compare` output: tables for people, JSON for tools."""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from ..rating import Comparison, Statement
from .output import write_json

_KINDS = {"usage": "usage", "fee": "fee", "sla_fee": "SLA fee", "sla_credit": "SLA credit"}


def _text(value: Any) -> str:
    return "" if value is None else format(value, "f")


def statement_table(statement: Statement) -> Table:
    table = Table(title=f"{statement.name} ({statement.plan_id}), {statement.period}: "
                        f"{statement.calls} calls, amounts in {statement.currency}")
    for name in ("kind", "line", "quantity", "included", "billed", "amount"):
        table.add_column(name, justify="left" if name in ("kind", "line") else "right")
    for line in statement.lines:
        table.add_row(_KINDS[line.kind], line.name, _text(line.quantity), _text(line.included),
                      _text(line.billed), _text(line.amount))
    table.add_section()
    table.add_row("total", "", "", "", "", f"[bold]{statement.total:f}[/]")
    return table


def sla_summary(statement: Statement) -> str | None:
    sla = statement.sla
    if sla is None:
        return None
    verdict = "met" if sla.met else "missed: credit applied"
    return (f"SLA: {sla.answered} of {sla.counted} counted calls answered in time "
            f"({sla.percent()}%; {sla.offered} offered): {verdict}")


def render_statement(statement: Statement, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        write_json(statement.to_json(), out)
        return
    console = Console(file=out, width=120)
    console.print(statement_table(statement))
    summary = sla_summary(statement)
    if summary:
        console.print(summary)


def render_comparison(comparison: Comparison, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        write_json(comparison.to_json(), out)
        return
    console = Console(file=out, width=120)
    costs = Table(title=f"{comparison.period}: {comparison.calls} calls priced under each plan "
                        f"({comparison.currency}), cheapest first")
    for name in ("plan", "name", "total", "vs active", "active"):
        costs.add_column(name, justify="right" if name in ("total", "vs active") else "left")
    for row in comparison.rows():
        costs.add_row(row["plan"], row["name"], row["total"], row["vs_active"], row["active"])
    console.print(costs)
    if comparison.break_even:
        even = Table(title="Break-even: the monthly volume at which two plans cost the same "
                           "(the period's mix of calls, scaled)")
        for name in ("plans", "volume", "calls", "cheaper below", "cheaper above"):
            even.add_column(name, justify="right" if name in ("volume", "calls") else "left")
        for row in comparison.break_even_rows():
            even.add_row(row["plans"], row["multiple"], row["calls"], row["cheaper_below"],
                         row["cheaper_above"])
        console.print(even)
