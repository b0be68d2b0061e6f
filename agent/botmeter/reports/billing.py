"""`botmeter bill` and `botmeter plans compare` output: tables for people, JSON for tools."""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from ..rating import Comparison, SlaClause, Statement
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


def _verdict(clause: SlaClause) -> str:
    if clause.met is None:
        return "not judged"
    if clause.met:
        return "met"
    return f"missed: credit {clause.credit:f}"


def sla_table(statement: Statement) -> Table | None:
    """Each SLA clause of the statement: what was measured, the target, the sample and the
    verdict (None for a plan without an SLA)."""
    if not statement.sla_clauses:
        return None
    table = Table(title="SLA clauses")
    for name in ("clause", "measured", "target", "sample", "verdict"):
        table.add_column(name, justify="right" if name == "measured" else "left")
    answer, csat = statement.sla, statement.csat
    for clause in statement.sla_clauses:
        measured = _text(clause.measured) or "n/a"
        if clause.clause == "answer_rate" and answer is not None:
            rate = answer.percent()
            table.add_row("answer rate", measured + (f" ({rate}%)" if rate != "n/a" else ""),
                          f">= {_text(clause.target)} within {_text(answer.max_ring_seconds)} s",
                          f"{clause.sample} counted calls", _verdict(clause))
            table.caption = (f"answer rate: {answer.answered} of {answer.counted} counted calls "
                             f"answered in time ({answer.offered} offered)")
        elif clause.clause == "csat" and csat is not None:
            sample = f"{clause.sample} responses"
            if clause.met is None:
                sample += f" (fewer than {csat.min_responses})"
            table.add_row("satisfaction", measured + (" of 5" if clause.measured is not None
                                                      else ""),
                          f">= {_text(clause.target)} of 5", sample, _verdict(clause))
    return table


def render_statement(statement: Statement, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        write_json(statement.to_json(), out)
        return
    console = Console(file=out, width=120)
    console.print(statement_table(statement))
    clauses = sla_table(statement)
    if clauses is not None:
        console.print(clauses)


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
    clauses = comparison.sla_rows()
    if clauses:
        sla = Table(title="SLA clauses of each plan, as its statement measures them")
        for name in ("plan", "clause", "measured", "target", "sample", "verdict"):
            sla.add_column(name, justify="right" if name in ("measured", "sample") else "left")
        for row in clauses:
            sla.add_row(row["plan"], row["clause"], row["measured"], row["target"],
                        row["sample"], row["verdict"])
        console.print(sla)
    if comparison.break_even:
        even = Table(title="Break-even: the monthly volume at which two plans cost the same "
                           "(the period's mix of calls, scaled)")
        for name in ("plans", "volume", "calls", "cheaper below", "cheaper above"):
            even.add_column(name, justify="right" if name in ("volume", "calls") else "left")
        for row in comparison.break_even_rows():
            even.add_row(row["plans"], row["multiple"], row["calls"], row["cheaper_below"],
                         row["cheaper_above"])
        console.print(even)
