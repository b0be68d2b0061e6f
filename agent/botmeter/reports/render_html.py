"""The HTML report: one self-contained file, printable on A4.

Nothing in it asks the network for anything: the styles are inline, the charts inline SVG
(`svg.py`), the fonts the reader's own (a system stack with CJK fallbacks), and a
Content-Security-Policy (`default-src 'none'`) makes a browser refuse any request anyway.
Every text that comes from the data (plan names and ids, caller numbers, row keys) is escaped.
The page's frame (`page_open`, `page_close`), the styles, `kpi` cards and `table`s are the
look other HTML outputs share (the reconciliation's annex, `reconcile/render_html.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from . import i18n, svg
from .svg import esc

ROW_COLUMNS = ("offered", "bot_answered", "handled", "transferred", "abandoned", "failed",
               "answer_rate", "containment_rate", "transfer_rate", "transfer_answered_rate",
               "cost")
RATE_COLUMNS = frozenset({"answer_rate", "containment_rate", "transfer_rate",
                          "transfer_answered_rate"})
BY_LABELS = {"day": "by_day", "week": "by_week", "hour": "by_hour", "weekday": "by_weekday",
             "outcome": "by_outcome_key", "dialed_number": "by_dialed_number",
             "transfer_target": "by_transfer_target"}

CSS = """
@page { size: A4; margin: 14mm 13mm 16mm 13mm;
  @bottom-right { content: counter(page) " / " counter(pages); font-size: 8pt; color: #6b7280; }
}
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0; background: #e9edf2; color: #1f2933;
  font-family: "Segoe UI", "Helvetica Neue", Arial, "Noto Sans CJK SC", "Noto Sans SC",
    "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK TC", "PingFang TC",
    "Microsoft JhengHei", "WenQuanYi Micro Hei", sans-serif;
  font-size: 10pt; line-height: 1.45; }
:lang(zh-Hant) body, body:lang(zh-Hant) { font-family: "Segoe UI", "Helvetica Neue", Arial,
    "Noto Sans CJK TC", "Noto Sans TC", "PingFang TC", "Microsoft JhengHei", "Noto Sans CJK SC",
    "WenQuanYi Micro Hei", sans-serif; }
.page { width: 210mm; min-height: 297mm; margin: 24px auto; padding: 14mm 13mm; background: #fff;
  box-shadow: 0 2px 12px rgba(15, 30, 60, .15); }
header { border-bottom: 3px solid #1e3a5f; padding-bottom: 8px; margin-bottom: 14px; }
.brand { font-size: 8pt; letter-spacing: .12em; text-transform: uppercase; color: #5b6472; }
h1 { font-size: 20pt; margin: 2px 0 4px; color: #1e3a5f; font-weight: 650; }
.meta { margin: 0; color: #4b5563; font-size: 9pt; }
.meta b { color: #1f2933; font-weight: 600; }
h2 { font-size: 12pt; color: #1e3a5f; margin: 18px 0 6px; padding-bottom: 3px;
  border-bottom: 1px solid #d5dbe3; break-after: avoid; page-break-after: avoid; }
.kpis { display: grid; grid-template-columns: repeat(6, 1fr); gap: 6px; margin: 0 0 6px;
  break-inside: avoid; page-break-inside: avoid; }
.kpi { border: 1px solid #d5dbe3; border-top: 3px solid #2b6cb0; border-radius: 4px;
  padding: 6px 8px 7px; background: #f8fafc; }
.kpi .label { font-size: 7.5pt; color: #5b6472; text-transform: uppercase; letter-spacing: .04em; }
.kpi .value { font-size: 15pt; font-weight: 650; color: #111827; margin-top: 1px;
  font-variant-numeric: tabular-nums; white-space: nowrap; }
.kpi .value small { font-size: 8pt; font-weight: 500; color: #5b6472; margin-left: 2px; }
.kpi .sub { font-size: 7.5pt; color: #5b6472; margin-top: 1px; line-height: 1.5; }
.kpi.budget-ok { border-top-color: #1f8a5b; }
.kpi.budget-warning { border-top-color: #d69e2e; }
.kpi.budget-over { border-top-color: #c53030; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 9px; font-size: 8pt;
  font-weight: 600; color: #fff; white-space: nowrap; }
.badge.ok, .badge.met { background: #1f8a5b; }
.badge.warning { background: #d69e2e; }
.badge.over, .badge.missed { background: #c53030; }
.badge.none, .badge.not_judged { background: #8a94a6; }
figure { margin: 10px 0 12px; break-inside: avoid; page-break-inside: avoid; }
figcaption { font-weight: 600; font-size: 9.5pt; color: #1f2933; margin-bottom: 2px; }
figcaption span { font-weight: 400; color: #5b6472; }
.chart { display: block; width: 100%; height: auto; }
.chart text { font-size: 10px; fill: #4b5563; }
.chart text.small { font-size: 9px; }
.chart text.legend { font-size: 10.5px; fill: #1f2933; }
.chart text.label { font-size: 11px; fill: #1f2933; }
.chart text.strong { font-weight: 700; fill: #1f8a5b; }
.chart text.budget { fill: #c8553d; font-weight: 600; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; break-inside: avoid;
  page-break-inside: avoid; }
table { border-collapse: collapse; width: 100%; font-size: 8.5pt; margin: 4px 0 8px;
  font-variant-numeric: tabular-nums; }
thead { display: table-header-group; }
tr { break-inside: avoid; page-break-inside: avoid; }
th { text-align: left; font-weight: 600; color: #374151; background: #eef2f7;
  border-bottom: 1px solid #c5cdd8; padding: 4px 5px; vertical-align: bottom; }
td { padding: 3px 5px; border-bottom: 1px solid #e6eaf0; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
th.num { text-align: right; }
tbody tr:nth-child(even) td { background: #fafbfd; }
tfoot td { font-weight: 700; border-top: 1.5px solid #1e3a5f; border-bottom: none;
  background: #fff; }
.rows { font-size: 7.6pt; }
.rows th { font-size: 7pt; padding: 3px 3px; }
.rows td { padding: 2px 3px; }
.rows td:first-child { white-space: nowrap; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.cols > div { break-inside: avoid; page-break-inside: avoid; }
.bar { display: inline-block; height: 8px; background: #4a7fc1; border-radius: 1px;
  vertical-align: middle; }
.muted { color: #6b7280; }
.note { font-size: 8pt; color: #6b7280; margin: 2px 0 0; }
footer { margin-top: 18px; padding-top: 6px; border-top: 1px solid #d5dbe3; font-size: 7.5pt;
  color: #6b7280; }
@media print {
  body { background: #fff; }
  .page { width: auto; min-height: 0; margin: 0; padding: 0; box-shadow: none; }
  h2 { margin-top: 12px; }
}
"""


def _period(report: dict[str, Any], lang: str) -> tuple[str, str]:
    """The title's words for the period (`November 2026`, or `1 Nov 2026 – 15 Nov 2026`) and
    the meta line's first and last day."""
    period = report.get("period") or {}
    try:
        start = datetime.fromisoformat(str(period["from"]))
        end = datetime.fromisoformat(str(period["to"]))
    except (KeyError, ValueError):
        return "", ""
    last = (end - timedelta(microseconds=1)).date()
    days = f"{i18n.day_text(start.date(), lang)} – {i18n.day_text(last, lang)}"
    whole_month = (start.day == 1 and start.time() == end.time() == datetime.min.time()
                   and end.day == 1 and (end.year * 12 + end.month) - (start.year * 12
                                                                         + start.month) == 1)
    title = i18n.month_title(start.year, start.month, lang) if whole_month else days
    return title, days


def kpi(label: str, value: str, sub: str = "", cls: str = "") -> str:
    return (f'<div class="kpi{" " + cls if cls else ""}"><div class="label">{esc(label)}</div>'
            f'<div class="value">{value}</div><div class="sub">{sub}</div></div>')


def dash(text: str) -> str:
    return esc(text) if text else "—"


def _budget_badge(budget: dict[str, Any] | None, words: dict[str, str]) -> str:
    if not budget:
        return f'<span class="badge none">{esc(words["no_budget"])}</span>'
    status = str(budget.get("status") or "")
    cls = status if status in ("ok", "warning", "over") else "none"
    text = words.get(f"status_{status}", status)
    return f'<span class="badge {cls}">{esc(text)}</span>'


def _summary(report: dict[str, Any], words: dict[str, str], lang: str) -> str:
    totals = report.get("totals") or {}
    currency = totals.get("currency")
    cur = f"<small>{esc(currency)}</small>" if currency else ""
    forecast = report.get("forecast") or {}
    budget = report.get("budget")
    cards = [
        kpi(words["offered"], dash(i18n.number(totals.get("offered"))),
            f'{esc(words["bot_answered"])} {esc(i18n.number(totals.get("bot_answered")))}'),
        kpi(words["answer_rate"], dash(i18n.percent(totals.get("answer_rate"))),
            f'SLA {dash(i18n.percent(totals.get("sla_answer_rate")))}'),
        kpi(words["containment_rate"], dash(i18n.percent(totals.get("containment_rate"))),
            f'{esc(words["transfer_rate"])} {dash(i18n.percent(totals.get("transfer_rate")))}'),
        kpi(words["cost_to_date"], dash(i18n.number(totals.get("cost"), 2)) + cur,
            f'{esc(words["cost_per_handled_call"])} '
            f'{dash(i18n.number(totals.get("cost_per_handled_call"), 2))}'),
    ]
    exhausted = forecast.get("bundle_exhausted_on")
    sub = ""
    if exhausted:
        try:
            sub = (f'{esc(words["bundle_exhausted_on"])} '
                   f'{esc(i18n.day_text(i18n.parse_date(str(exhausted)), lang, year=False))}')
        except ValueError:
            sub = f'{esc(words["bundle_exhausted_on"])} {esc(exhausted)}'
    cards.append(kpi(words["forecast"],
                     dash(i18n.number(forecast.get("month_end_cost"), 2))
                     + (cur if forecast.get("month_end_cost") is not None else ""), sub))
    if budget:
        value = dash(i18n.percent(budget.get("used_share"), 0))
        sub = (f'{_budget_badge(budget, words)}<br>{esc(words["monthly_budget"])} '
               f'{esc(i18n.number(budget.get("monthly"), 2))}')
        cls = f'budget-{budget.get("status")}' if budget.get("status") in (
            "ok", "warning", "over") else ""
        cards.append(kpi(f'{words["budget"]} · {words["used_share"]}', value, sub, cls))
    else:
        cards.append(kpi(words["budget"], "—", _budget_badge(None, words)))
    return f'<section class="kpis">{"".join(cards)}</section>'


def _figure(title: str, chart: str, note: str = "") -> str:
    return (f'<figure><figcaption>{esc(title)}'
            + (f' <span>{esc(note)}</span>' if note else "") + f'</figcaption>{chart}</figure>')


def _charts(report: dict[str, Any], words: dict[str, str], lang: str) -> str:
    totals = report.get("totals") or {}
    charts = report.get("charts") or {}
    daily = charts.get("daily") or []
    currency = totals.get("currency")
    budget = report.get("budget") or {}
    forecast = report.get("forecast") or {}
    plan = report.get("plan") or {}
    plans = named_plans(report)
    parts = [
        _figure(words["chart_daily"], svg.daily_stacked(daily, lang)),
        _figure(words["chart_cost"],
                svg.cumulative_cost(daily, budget.get("monthly"), forecast.get("month_end_cost"),
                                    currency, lang),
                f'({words["amounts_in"]} {currency})' if currency else ""),
        '<div class="pair">'
        + _figure(words["chart_histogram"],
                  svg.histogram(charts.get("bot_seconds_histogram") or [], lang))
        + _figure(words["chart_heatmap"], svg.heatmap(charts.get("heatmap") or [], lang))
        + "</div>",
        _figure(words["chart_plans"],
                svg.plan_bars(plans, plan.get("plan_id"), currency, lang),
                "" if plans else words["no_plans"]),
    ]
    return "".join(parts)


def thead(headers: Sequence[tuple[str, bool]]) -> str:
    """A table's head row (`headers`: (text, numeric)); nothing when every text is empty."""
    head = "".join(f'<th{" class=num" if num else ""}>{esc(text)}</th>' for text, num in headers)
    return f"<thead><tr>{head}</tr></thead>" if any(text for text, _ in headers) else ""


def cells(headers: Sequence[tuple[str, bool]], row: Sequence[str]) -> str:
    """A row's cells, numeric columns right-aligned; cells are already-escaped HTML."""
    return "".join(f'<td{" class=num" if headers[i][1] else ""}>{cell}</td>'
                   for i, cell in enumerate(row))


def table(headers: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]],
          cls: str = "", foot: Sequence[str] | None = None) -> str:
    """`headers`: (text, numeric); cells are already-escaped HTML."""
    body = "".join(f"<tr>{cells(headers, row)}</tr>" for row in rows)
    tfoot = f"<tfoot><tr>{cells(headers, foot)}</tr></tfoot>" if foot is not None else ""
    return (f'<table{f" class={cls}" if cls else ""}>{thead(headers)}'
            f'<tbody>{body}</tbody>{tfoot}</table>')


def _clause_value(clause: dict[str, Any], key: str, words: dict[str, str]) -> str:
    value = clause.get(key)
    if value is None:
        return "—"
    if clause.get("clause") == "answer_rate":
        return esc(i18n.percent(value))
    if clause.get("clause") == "csat":
        return esc(f'{i18n.number(value, 2)} {words["out_of_5"]}')
    return esc(value)


def _sla(report: dict[str, Any], words: dict[str, str]) -> str:
    clauses = report.get("sla") or []
    out = [f'<h2>{esc(words["sla"])}</h2>']
    if not clauses:
        out.append(f'<p class="muted">{esc(words["no_sla"])}</p>')
        return "".join(out)
    rows = []
    for clause in clauses:
        met = clause.get("met")
        verdict = "not_judged" if met is None else "met" if met else "missed"
        name = words.get(f'clause_{clause.get("clause")}', str(clause.get("clause")))
        rows.append([esc(name), _clause_value(clause, "measured", words),
                     "≥ " + _clause_value(clause, "target", words),
                     esc(i18n.number(clause.get("sample"))),
                     f'<span class="badge {verdict}">{esc(words[verdict])}</span>'])
    out.append(table([(words["clause"], False), (words["measured"], True),
                      (words["target"], True), (words["sample"], True),
                      (words["verdict"], False)], rows))
    return "".join(out)


def _csat(report: dict[str, Any], words: dict[str, str]) -> str:
    csat = (report.get("totals") or {}).get("csat") or {}
    out = [f'<h3>{esc(words["csat"])}</h3>']
    if not csat.get("responses"):
        out.append(f'<p class="muted">{esc(words["no_csat"])}</p>')
        return "".join(out)
    out.append(table([(words["mean"], False), (words["responses"], True),
                      (words["response_rate"], True)],
                     [[f'<b>{esc(i18n.number(csat.get("mean"), 2))}</b> '
                       f'{esc(words["out_of_5"])}', esc(i18n.number(csat.get("responses"))),
                       esc(i18n.percent(csat.get("response_rate")))]]))
    distribution = csat.get("distribution") or {}
    peak = max((int(v or 0) for v in distribution.values()), default=0) or 1
    total = sum(int(v or 0) for v in distribution.values()) or 1
    rows = []
    for score in sorted(distribution, key=lambda s: str(s), reverse=True):
        count = int(distribution[score] or 0)
        rows.append([esc(f"{'★' * int(score) if str(score).isdigit() and int(score) <= 10 else score}"),
                     esc(i18n.number(count)), esc(i18n.percent(count / total)),
                     f'<span class="bar" style="width:{round(70 * count / peak)}px"></span>'])
    out.append(table([(words["score"], False), (words["responses"], True), ("%", True),
                      (words["distribution"], False)], rows))
    by_outcome = csat.get("by_outcome") or {}
    if by_outcome:
        out.append(table([(words["by_outcome"], False), (words["mean"], True)],
                         [[esc(words.get(str(k), str(k))), esc(i18n.number(v, 2))]
                          for k, v in by_outcome.items()]))
    return "".join(out)


def _repeat(report: dict[str, Any], words: dict[str, str]) -> str:
    repeat = report.get("repeat_callers") or {}
    out = [f'<h3>{esc(words["repeat_callers"])}</h3>',
           table([(words["repeat_callers"], False), (words["calls"], True)],
                  [[esc(words["within_24h"]), esc(i18n.number(repeat.get("within_24h")))],
                   [esc(words["within_7d"]), esc(i18n.number(repeat.get("within_7d")))]])]
    top = repeat.get("top") or []
    if top:
        out.append(table([(words["top_repeaters"], False), (words["calls"], True)],
                          [[esc(t.get("caller_number", "")), esc(i18n.number(t.get("calls")))]
                           for t in top]))
    return "".join(out)


def _usage(report: dict[str, Any], words: dict[str, str], lang: str) -> str:
    totals = report.get("totals") or {}
    bot = totals.get("bot_seconds") or {}
    rows = [
        [esc(words["bot_seconds_total"]), esc(i18n.seconds(bot.get("total"), lang))],
        [esc(f'{words["bot_seconds_total"]} · {words["mean"]}'),
         dash(i18n.seconds(bot.get("mean"), lang))],
        [esc(f'{words["bot_seconds_total"]} · {words["median"]}'),
         dash(i18n.seconds(bot.get("median"), lang))],
        [esc(f'{words["bot_seconds_total"]} · {words["p90"]}'),
         dash(i18n.seconds(bot.get("p90"), lang))],
        [esc(words["human_seconds"]),
         dash(i18n.seconds((totals.get("human_seconds") or {}).get("total"), lang))],
        [esc(words["human_wait_median"]),
         dash(i18n.seconds((totals.get("human_wait_seconds") or {}).get("median"), lang))],
        [esc(words["abandoned_wait_mean"]),
         dash(i18n.seconds((totals.get("abandoned_wait_seconds") or {}).get("mean"), lang))],
        [esc(words["transfer_answered_rate"]),
         dash(i18n.percent(totals.get("transfer_answered_rate")))],
    ]
    for name, usage in (totals.get("modules") or {}).items():
        usage = usage or {}
        rows.append([esc(f'{words["module"]}: {str(name).upper()}'),
                     esc(f'{i18n.number(usage.get("quantity"))} {usage.get("unit", "")}')])
    return (f'<h3>{esc(words["bot_seconds_total"])} / {esc(words["modules"])}</h3>'
            + table([("", False), ("", True)], rows))


def named_plans(report: dict[str, Any]) -> list[dict[str, Any]]:
    """`plans` with a `name` each: its own, the active plan's name, or its id."""
    active = report.get("plan") or {}
    named = []
    for plan in report.get("plans") or []:
        name = plan.get("name") or (active.get("name") if plan.get("plan_id") == active.get(
            "plan_id") else None) or plan.get("plan_id", "")
        named.append({**plan, "name": name})
    return named


def _plans_table(report: dict[str, Any], words: dict[str, str]) -> str:
    plans = named_plans(report)
    if not plans:
        return ""
    active = (report.get("plan") or {}).get("plan_id")
    currency = (report.get("totals") or {}).get("currency")
    rows = []
    for plan in plans:
        mark = f' <span class="badge ok">{esc(words["active"])}</span>' if plan.get(
            "plan_id") == active else ""
        rows.append([esc(plan.get("name") or plan.get("plan_id", "")) + mark,
                     esc(plan.get("plan_id", "")), esc(i18n.money(plan.get("total"), currency)),
                     esc(_signed(plan.get("vs_active")))])
    return (f'<h2>{esc(words["plan_advice"])}</h2>'
            + table([(words["plan"], False), (words["plan_id"], False), (words["total"], True),
                     (words["vs_active"], True)], rows))


def _signed(value: Any) -> str:
    text = i18n.number(value, 2)
    if text and not text.startswith("-") and text.strip("0.,") != "":
        return "+" + text
    return text.replace("-", "−")


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if key in RATE_COLUMNS:
        return dash(i18n.percent(value))
    if key == "cost":
        return dash(i18n.number(value, 2))
    return dash(i18n.number(value))


def row_key(key: Any, by: str, words: dict[str, str]) -> str:
    """A row's key as people read it: outcomes translated, the rest as the data says."""
    text = "" if key is None else str(key)
    if by == "outcome" and text in words:
        return words[text]
    return text


def _rows(report: dict[str, Any], words: dict[str, str]) -> str:
    rows = report.get("rows") or []
    by = str(report.get("by") or "day")
    out = [f'<h2>{esc(words["rows"])}</h2>']
    if not rows:
        out.append(f'<p class="muted">{esc(words["no_rows"])}</p>')
        return "".join(out)
    headers = [(words.get(BY_LABELS.get(by, ""), by), False)] + [
        (words[c], True) for c in ROW_COLUMNS]
    body = [[esc(row_key(r.get("key"), by, words))] + [_cell(r, c) for c in ROW_COLUMNS]
            for r in rows]
    totals = report.get("totals") or {}
    foot = [esc(words["total"])] + [_cell(totals, c) for c in ROW_COLUMNS]
    out.append(table(headers, body, "rows", foot))
    return "".join(out)


def render_html(report: dict[str, Any], lang: str) -> str:
    words = i18n.labels(lang)
    title, days = _period(report, lang)
    period = report.get("period") or {}
    plan = report.get("plan")
    totals = report.get("totals") or {}
    plan_text = (f'<b>{esc(plan.get("name") or plan.get("plan_id", ""))}</b> '
                 f'<span class="muted">({esc(plan.get("plan_id", ""))})</span>'
                 if plan else f'<span class="muted">{esc(words["no_plan"])}</span>')
    meta = (f'{esc(words["period"])}: <b>{esc(days)}</b> ({esc(period.get("timezone", ""))})'
            f' &nbsp;·&nbsp; {esc(words["plan"])}: {plan_text}')
    if totals.get("currency"):
        meta += f' &nbsp;·&nbsp; {esc(words["amounts_in"])} <b>{esc(totals["currency"])}</b>'
    doc_title = f'{words["report_title"]} · {title}'
    return "".join([
        page_open(lang, doc_title, words["report"], f'{words["report_title"]} — {title}',
                  [meta]),
        f'<h2>{esc(words["summary"])}</h2>',
        _summary(report, words, lang),
        f'<h2>{esc(words["charts"])}</h2>',
        _charts(report, words, lang),
        _sla(report, words),
        _plans_table(report, words),
        '<div class="cols"><div>', _csat(report, words), "</div><div>",
        _repeat(report, words), _usage(report, words, lang), "</div></div>",
        _rows(report, words),
        page_close(f'{words["generated_by"]} {doc_title}'),
    ])


def page_open(lang: str, title: str, brand: str, heading: str, meta: Sequence[str],
              css: str = CSS) -> str:
    """The document up to its first section: its language, a policy under which a browser
    fetches nothing, the styles, and the page's header (`meta`: lines of escaped HTML)."""
    lines = "".join(f'<p class="meta">{line}</p>' for line in meta)
    return "".join([
        "<!DOCTYPE html>\n",
        f'<html lang="{esc(i18n.check_lang(lang))}"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        'style-src \'unsafe-inline\'; img-src data:">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<title>{esc(title)}</title><style>{css}</style></head><body><div class="page">',
        f'<header><div class="brand">botmeter · {esc(brand)}</div>',
        f'<h1>{esc(heading)}</h1>{lines}</header>',
    ])


def page_close(footer: str) -> str:
    return f"<footer>{esc(footer)}</footer></div></body></html>\n"
