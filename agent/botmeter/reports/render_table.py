"""The report as rich tables for a terminal, labels in the chosen language.

Texts from the data go in as `rich.text.Text` (never parsed as markup) with control characters
replaced, like `botmeter calls`' table.
"""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import i18n
from .render_html import BY_LABELS, RATE_COLUMNS, ROW_COLUMNS, named_plans, row_key

_CONTROLS = {c: "\ufffd" for c in (*range(0x20), *range(0x7f, 0xa0))}


def _t(value: Any) -> Text:
    return Text("" if value is None else str(value).translate(_CONTROLS))


def _or_na(text: str, words: dict[str, str]) -> str:
    return text if text else words["n_a"]


def _pairs(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(justify="left")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(_t(name), _t(value))
    return table


def _totals(report: dict[str, Any], words: dict[str, str], lang: str) -> Table:
    totals = report.get("totals") or {}
    currency = totals.get("currency")
    bot = totals.get("bot_seconds") or {}
    na = words["n_a"]
    rows = [(words[k], i18n.number(totals.get(k))) for k in (
        "offered", "bot_answered", "handled", "transferred", "abandoned", "failed")]
    rows += [(words[k], i18n.percent(totals.get(k)) or na) for k in (
        "answer_rate", "sla_answer_rate", "containment_rate", "transfer_rate",
        "transfer_answered_rate")]
    rows += [
        (words["bot_seconds_total"], i18n.seconds(bot.get("total"), lang) or na),
        (f'{words["bot_seconds_total"]} · {words["mean"]}', i18n.seconds(bot.get("mean"), lang) or na),
        (f'{words["bot_seconds_total"]} · {words["median"]}',
         i18n.seconds(bot.get("median"), lang) or na),
        (f'{words["bot_seconds_total"]} · {words["p90"]}', i18n.seconds(bot.get("p90"), lang) or na),
        (words["human_seconds"],
         i18n.seconds((totals.get("human_seconds") or {}).get("total"), lang) or na),
        (words["human_wait_median"],
         i18n.seconds((totals.get("human_wait_seconds") or {}).get("median"), lang) or na),
        (words["abandoned_wait_mean"],
         i18n.seconds((totals.get("abandoned_wait_seconds") or {}).get("mean"), lang) or na),
    ]
    for name, usage in (totals.get("modules") or {}).items():
        usage = usage or {}
        rows.append((f'{words["module"]}: {str(name).upper()}',
                     f'{i18n.number(usage.get("quantity"))} {usage.get("unit", "")}'))
    rows += [(words["cost_to_date"], i18n.money(totals.get("cost"), currency) or na),
             (words["cost_per_handled_call"],
              i18n.money(totals.get("cost_per_handled_call"), currency) or na)]
    return _pairs(words["summary"], rows)


def _sla(report: dict[str, Any], words: dict[str, str]) -> Table | None:
    clauses = report.get("sla") or []
    if not clauses:
        return None
    table = Table(title=words["sla"], title_justify="left")
    for name, right in (("clause", False), ("measured", True), ("target", True),
                        ("sample", True), ("verdict", False)):
        table.add_column(words[name], justify="right" if right else "left")
    for clause in clauses:
        kind = clause.get("clause")

        def value(key: str, kind: Any = kind, clause: dict[str, Any] = clause) -> str:
            v = clause.get(key)
            if v is None:
                return words["n_a"]
            if kind == "answer_rate":
                return i18n.percent(v)
            if kind == "csat":
                return f'{i18n.number(v, 2)} {words["out_of_5"]}'
            return str(v)

        met = clause.get("met")
        verdict = words["not_judged"] if met is None else words["met"] if met else words["missed"]
        style = "" if met is None else "green" if met else "bold red"
        table.add_row(_t(words.get(f"clause_{kind}", str(kind))), _t(value("measured")),
                      _t("≥ " + value("target")), _t(i18n.number(clause.get("sample"))),
                      Text(verdict, style=style))
    return table


def _plans(report: dict[str, Any], words: dict[str, str]) -> Table | None:
    plans = named_plans(report)
    if not plans:
        return None
    active = (report.get("plan") or {}).get("plan_id")
    currency = (report.get("totals") or {}).get("currency")
    table = Table(title=words["plan_advice"], title_justify="left")
    for name, right in (("plan", False), ("plan_id", False), ("total", True),
                        ("vs_active", True), ("active", False)):
        table.add_column(words[name], justify="right" if right else "left")
    for plan in plans:
        table.add_row(_t(plan["name"]), _t(plan.get("plan_id")),
                      _t(i18n.money(plan.get("total"), currency)),
                      _t(i18n.number(plan.get("vs_active"), 2)),
                      _t("✓" if plan.get("plan_id") == active else ""))
    return table


def _forecast(report: dict[str, Any], words: dict[str, str], lang: str) -> Table:
    currency = (report.get("totals") or {}).get("currency")
    forecast = report.get("forecast") or {}
    budget = report.get("budget")
    na = words["n_a"]
    exhausted = forecast.get("bundle_exhausted_on")
    try:
        exhausted_text = i18n.day_text(i18n.parse_date(str(exhausted)), lang) if exhausted else na
    except ValueError:
        exhausted_text = str(exhausted)
    rows = [(words["forecast"], i18n.money(forecast.get("month_end_cost"), currency) or na),
            (words["bundle_exhausted_on"], exhausted_text)]
    if budget:
        status = str(budget.get("status") or "")
        rows += [(words["monthly_budget"], i18n.money(budget.get("monthly"), currency) or na),
                 (words["used_share"], i18n.percent(budget.get("used_share")) or na),
                 (words["budget"], words.get(f"status_{status}", status))]
    else:
        rows.append((words["budget"], words["no_budget"]))
    return _pairs(words["forecast_table"], rows)


def _repeat(report: dict[str, Any], words: dict[str, str]) -> list[Table]:
    repeat = report.get("repeat_callers") or {}
    tables = [_pairs(words["repeat_callers"],
                     [(words["within_24h"], i18n.number(repeat.get("within_24h"))),
                      (words["within_7d"], i18n.number(repeat.get("within_7d")))])]
    top = repeat.get("top") or []
    if top:
        table = Table(title=words["top_repeaters"], title_justify="left")
        table.add_column(words["caller_number"])
        table.add_column(words["calls"], justify="right")
        for entry in top:
            table.add_row(_t(entry.get("caller_number")), _t(i18n.number(entry.get("calls"))))
        tables.append(table)
    return tables


def _csat(report: dict[str, Any], words: dict[str, str]) -> Table:
    csat = (report.get("totals") or {}).get("csat") or {}
    na = words["n_a"]
    rows = [(words["responses"], i18n.number(csat.get("responses")) or "0"),
            (words["response_rate"], i18n.percent(csat.get("response_rate")) or na),
            (words["mean"], (i18n.number(csat.get("mean"), 2) + " " + words["out_of_5"])
             if csat.get("mean") is not None else na)]
    for score, count in sorted((csat.get("distribution") or {}).items(), reverse=True):
        rows.append((f'{words["score"]} {score}', i18n.number(count)))
    for outcome, mean in (csat.get("by_outcome") or {}).items():
        rows.append((f'{words["by_outcome"]}: {words.get(str(outcome), str(outcome))}',
                     i18n.number(mean, 2)))
    return _pairs(words["csat"], rows)


def _rows(report: dict[str, Any], words: dict[str, str]) -> Table:
    by = str(report.get("by") or "day")
    currency = (report.get("totals") or {}).get("currency")
    title = words["rows"] + (f' ({words["amounts_in"]} {currency})' if currency else "")
    table = Table(title=title, title_justify="left")
    table.add_column(words.get(BY_LABELS.get(by, ""), by))
    for column in ROW_COLUMNS:
        table.add_column(words[column], justify="right")

    def cells(row: dict[str, Any]) -> list[Text]:
        out = []
        for column in ROW_COLUMNS:
            value = row.get(column)
            if column in RATE_COLUMNS:
                out.append(_t(i18n.percent(value) or "—"))
            elif column == "cost":
                out.append(_t(i18n.number(value, 2) or "—"))
            else:
                out.append(_t(i18n.number(value)))
        return out

    for row in report.get("rows") or []:
        table.add_row(_t(row_key(row.get("key"), by, words)), *cells(row))
    table.add_section()
    table.add_row(Text(words["total"], style="bold"), *cells(report.get("totals") or {}))
    return table


def render_table(report: dict[str, Any], lang: str, out: TextIO, width: int = 160) -> None:
    words = i18n.labels(lang)
    from .render_html import _period  # the same title words as the HTML

    title, days = _period(report, lang)
    plan = report.get("plan")
    console = Console(file=out, width=width, highlight=False)
    head = Text(f'{words["report_title"]} — {title}', style="bold")
    console.print(head)
    period = report.get("period") or {}
    plan_text = (f'{plan.get("name") or plan.get("plan_id")} ({plan.get("plan_id")})' if plan
                 else words["no_plan"])
    console.print(_t(f'{words["period"]}: {days} ({period.get("timezone", "")}) · '
                     f'{words["plan"]}: {plan_text}'))
    console.print(_totals(report, words, lang))
    for table in (_sla(report, words), _plans(report, words), _forecast(report, words, lang),
                  *_repeat(report, words), _csat(report, words), _rows(report, words)):
        if table is not None:
            console.print(table)
