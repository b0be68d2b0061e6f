"""The reconciliation as a dispute letter's annex: one self-contained HTML file in the report's
look (`reports.render_html`: its styles, header, cards and tables), printable on A4, in the
report's language.

The head (period, plan, currency, invoice, time zone), the totals per class with the disputed
amount, then the lines class by class: each line is the vendor's row above the botmeter row it
was matched with (one `<tbody>`, never split across pages; the field its class says differs is
marked), then the problems found in the invoice. Lines are written as `Reconciliation.lines()`
reads them, never held in memory. Times are shown in the plan's time zone. Every text that comes
from outside (session ids, caller numbers, call ids, file names, messages) is escaped.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from ..reports import i18n
from ..reports.render_html import CSS, dash, kpi, page_close, page_open, table, thead
from ..reports.svg import esc
from .reconciler import CLASSES, DISPUTED, Reconciliation
from .render import listed_classes
from .words import words

#: the evidence column a class says differs, marked on both rows of its lines
DIFFERS = {"duration_differs": "duration", "amount_differs": "amount"}

ANNEX_CSS = """
.kpis.annex { grid-template-columns: 1.6fr 1fr 1fr 1fr; }
.kpi.disputed { border-top-color: #c53030; }
.kpi.disputed .value { color: #c53030; font-size: 19pt; }
h3 { font-size: 10pt; color: #1e3a5f; margin: 12px 0 4px; break-after: avoid;
  page-break-after: avoid; }
h3 .count { font-weight: 400; color: #5b6472; margin-left: 4px; }
.mark { display: inline-block; padding: 0 6px; border: 1px solid currentColor; border-radius: 9px;
  font-size: 8pt; font-weight: 600; white-space: nowrap; background: #fff; }
.mark.match { color: #1f7a50; }
.mark.duration_differs, .mark.amount_differs { color: #9c5a0c; }
.mark.vendor_only { color: #c53030; }
.mark.botmeter_only { color: #4b5563; }
table.evidence { font-size: 7.6pt; table-layout: fixed; }
.evidence th, .evidence td { padding: 2px 4px; }
.evidence td { overflow-wrap: anywhere; }
.evidence thead th:nth-child(1) { width: 8%; }
.evidence thead th:nth-child(2) { width: 13%; }
.evidence thead th:nth-child(3) { width: 14%; }
.evidence thead th:nth-child(4) { width: 12%; }
.evidence thead th:nth-child(5) { width: 17%; }
.evidence thead th:nth-child(6), .evidence thead th:nth-child(7) { width: 8%; }
.evidence thead th:nth-child(8) { width: 11%; }
.evidence thead th:nth-child(9) { width: 9%; }
.evidence tbody.line { break-inside: avoid; page-break-inside: avoid; }
.evidence tbody.line tr > td, .evidence tbody.line tr > th { background: none;
  border-bottom: none; }
.evidence tbody.line tr:last-child > td, .evidence tbody.line tr:last-child > th,
.evidence tbody.line td[rowspan] { border-bottom: 1px solid #d5dbe3; }
.evidence tbody.line th { color: #5b6472; font-weight: 600; vertical-align: top; }
.evidence td.diff { color: #c53030; font-weight: 700; }
.evidence .outcome { display: block; color: #6b7280; }
ol.problems { font-size: 8pt; margin: 4px 0; padding-left: 22px; }
ol.problems li { break-inside: avoid; page-break-inside: avoid; overflow-wrap: anywhere; }
"""


def write_html(result: Reconciliation, lang: str, out: TextIO, *, all_lines: bool) -> None:
    """Write the annex to `out`: every line not a `match` (every line with `all_lines`)."""
    w = words(lang)
    year, month = (int(part) for part in result.period.split("-"))
    title = f'{w["title"]} — {i18n.month_title(year, month, lang)}'
    out.write(page_open(lang, title, w["title"], title, _meta(result, w, lang, year, month),
                        CSS + ANNEX_CSS))
    out.write(_totals(result, w))
    out.write(f'<h2>{esc(w["matches_listed" if all_lines else "lines_listed"])}</h2>')
    zone = ZoneInfo(result.timezone)
    outcomes = i18n.labels(lang)
    shown = [cls for cls in listed_classes(all_lines) if result.classes[cls].lines]
    for cls in shown:
        out.write(f'<h3>{_mark(cls, w)}<span class="count">'
                  f'{esc(_count(result.classes[cls].lines, w))}</span></h3>'
                  f'<table class="evidence">{thead(_headers(w))}')
        for line in result.lines((cls,)):
            out.write(_line(line, w, zone, outcomes))
        out.write("</table>")
    if not shown:
        out.write(f'<p class="muted">{esc(w["none"])}</p>')
    if not all_lines and result.classes["match"].lines:
        hidden = w["matches_hidden"].format(n=i18n.number(result.classes["match"].lines))
        out.write(f'<p class="note">{esc(hidden)}</p>')
    out.write(_problems(result, w))
    out.write(page_close(f'{w["generated_by"]} {title}'))


def _meta(result: Reconciliation, w: dict[str, str], lang: str, year: int,
          month: int) -> list[str]:
    first = date(year, month, 1)
    last = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
    days = f"{i18n.day_text(first, lang)} – {i18n.day_text(last, lang)}"
    sep = " &nbsp;·&nbsp; "
    return [
        esc(w["subtitle"]),
        sep.join([f'{esc(w["period"])}: <b>{esc(days)}</b> ({esc(result.period)})',
                  f'{esc(w["timezone"])}: <b>{esc(result.timezone)}</b>',
                  f'{esc(w["plan"])}: <b>{esc(result.plan_id)}</b>',
                  f'{esc(w["currency"])}: <b>{esc(result.currency)}</b>']),
        sep.join([f'{esc(w["invoice"])}: <b>{esc(result.invoice)}</b>',
                  f'{esc(w["vendor_lines"])}: <b>{esc(i18n.number(result.vendor_lines))}</b>']),
    ]


def _totals(result: Reconciliation, w: dict[str, str]) -> str:
    """The cards (the disputed amount first and largest) and the table of totals per class."""
    classes = result.classes
    currency = f"<small>{esc(result.currency)}</small>"
    vendor = sum(t.vendor_micro for t in classes.values())
    botmeter = sum(t.botmeter_micro for t in classes.values())
    disputed_lines = sum(classes[cls].lines for cls in DISPUTED)
    names = w["list_sep"].join(w[cls] for cls in DISPUTED)
    cards = [
        kpi(w["disputed_amount"], _money(result, result.disputed_micro) + currency,
            cls="disputed"),
        kpi(w["vendor_amount"], _money(result, vendor) + currency,
            f'{esc(w["vendor_lines"])} {esc(i18n.number(result.vendor_lines))}'),
        kpi(w["botmeter_amount"], _money(result, botmeter) + currency),
        kpi(w["lines_in_dispute"], esc(i18n.number(disputed_lines))),
    ]
    rows = [[_mark(cls, w), esc(i18n.number(classes[cls].lines)),
             _money(result, classes[cls].vendor_micro),
             _money(result, classes[cls].botmeter_micro)] for cls in CLASSES]
    foot = [esc(w["total"]), esc(i18n.number(sum(t.lines for t in classes.values()))),
            _money(result, vendor), _money(result, botmeter)]
    notes = [w["disputed_note"].format(classes=names)]
    if result.unrated_calls:
        notes.append(w["unrated"].format(n=i18n.number(result.unrated_calls)))
    return "".join([
        f'<section class="kpis annex">{"".join(cards)}</section>',
        f'<h2>{esc(w["totals"])} ({esc(result.currency)})</h2>',
        table([(w["class"], False), (w["lines"], True), (w["vendor_amount"], True),
               (w["botmeter_amount"], True)], rows, foot=foot),
        "".join(f'<p class="note">{esc(note)}</p>' for note in notes),
    ])


def _count(lines: int, w: dict[str, str]) -> str:
    return w["one_line"] if lines == 1 else w["n_lines"].format(n=i18n.number(lines))


def _headers(w: dict[str, str]) -> list[tuple[str, bool]]:
    return [("", False), (f'{w["line"]} / {w["call_id"]}', False), (w["session_id"], False),
            (w["caller"], False), (f'{w["started_at"]} / {w["answered_at"]}', False),
            (w["duration"], True), (w["amount"], True), (w["matched_by"], False),
            (w["seconds_apart"], True)]


def _line(line: dict[str, Any], w: dict[str, str], zone: ZoneInfo,
          outcomes: dict[str, str]) -> str:
    """One line: the vendor's row above the botmeter row (either may be missing), how they
    were matched beside both."""
    vendor, mine = line["vendor"], line["botmeter"]
    differs = DIFFERS.get(line["class"])
    rows: list[tuple[str, list[str]]] = []
    if vendor is not None:
        duration = (_unit(vendor["seconds"], w["sec"]) if "seconds" in vendor
                    else _unit(vendor.get("minutes"), w["min"]))
        rows.append((w["vendor"], [
            _td(str(vendor["line"])), _td(vendor["session_id"]), _td(vendor["caller_number"]),
            _td(vendor["started_at"]),  # as the vendor wrote it
            _td(duration, "num", differs == "duration"),
            _td(_decimal(vendor["amount"]), "num", differs == "amount")]))
    if mine is not None:
        outcome = outcomes.get(mine["outcome"], mine["outcome"])
        rows.append((w["botmeter"], [
            f'<td>{esc(line["call_id"])}<span class="outcome">{esc(outcome)}</span></td>',
            _td(mine["bot_session_id"]), _td(mine["caller_number"]),
            _td(_local(mine["bot_answered_at"] or mine["offered_at"], zone)),
            _td(_unit(mine["seconds"], w["sec"]), "num", differs == "duration"),
            _td(_decimal(mine["amount"]), "num", differs == "amount")]))
    how = w["by_" + line["matched_by"]] if line.get("matched_by") else ""
    span = f' rowspan="{len(rows)}"' if len(rows) > 1 else ""
    rows[0][1].extend([f"<td{span}>{dash(how)}</td>", f'<td{span} class="num">'
                       f'{dash(_unit(line.get("seconds_apart"), w["sec"]))}</td>'])
    return '<tbody class="line">' + "".join(
        f'<tr><th scope="row">{esc(side)}</th>{"".join(cells)}</tr>'
        for side, cells in rows) + "</tbody>"


def _problems(result: Reconciliation, w: dict[str, str]) -> str:
    problems = result.problems
    out = [f'<h2>{esc(w["problems"])}</h2>']
    if not problems.count:
        out.append(f'<p class="muted">{esc(w["none"])}</p>')
        return "".join(out)
    if problems.count > len(problems.items):
        count = w["problem_count"].format(n=i18n.number(problems.count),
                                          k=i18n.number(len(problems.items)))
        out.append(f'<p class="note">{esc(count)}</p>')
    out.append('<ol class="problems">')
    out.extend(f"<li>{esc(str(problem))}</li>" for problem in problems.items)
    out.append("</ol>")
    return "".join(out)


def _td(text: str | None, cls: str = "", differs: bool = False) -> str:
    classes = " ".join(c for c in (cls, "diff" if differs else "") if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{dash(text or '')}</td>"


def _mark(cls: str, w: dict[str, str]) -> str:
    return f'<span class="mark {cls}">{esc(w[cls])}</span>'


def _money(result: Reconciliation, micro: int) -> str:
    return esc(_decimal(result.amount(micro)))


def _decimal(text: str | None) -> str:
    """A decimal string grouped by thousands, its places kept (`1234.5600` -> `1,234.5600`)."""
    return "" if text is None else format(Decimal(text), ",f")


def _unit(value: str | None, unit: str) -> str:
    return "" if value is None else f"{_decimal(value)} {unit}"


def _local(iso: str | None, zone: ZoneInfo) -> str:
    """A UTC time from the result in the plan's time zone, milliseconds only when there are
    some: `2026-11-26 23:25:36.913`."""
    if iso is None:
        return ""
    moment = datetime.fromisoformat(iso).astimezone(zone)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}" if moment.microsecond >= 1000 else text
