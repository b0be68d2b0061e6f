"""The HTML report's charts as inline SVG, drawn in Python (no script, no chart library).

Every function returns one `<svg>` element as text, sized by its viewBox (the page scales it to
its column's width); every text from the data goes through `esc`. Colours are the report's
palette (`COLOURS`), also used by the legend in the HTML.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from html import escape
from typing import Any

from . import i18n

COLOURS = {
    "handled": "#2b6cb0",
    "transferred": "#e3a03a",
    "abandoned": "#c8553d",
    "failed": "#8a94a6",
    "actual": "#2b6cb0",
    "forecast": "#2b6cb0",
    "budget": "#c8553d",
    "grid": "#e3e7ee",
    "axis": "#5b6472",
    "bar": "#4a7fc1",
    "active": "#1f8a5b",
    "plan": "#a9bcd6",
}
OUTCOMES = ("handled", "transferred", "abandoned", "failed")


def esc(text: Any) -> str:
    return escape(str(text), quote=True)


def _n(value: float) -> str:
    """A coordinate: at most one decimal, no trailing zeros."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def nice_max(value: float, ticks: int = 4) -> tuple[float, float]:
    """An axis top >= value and its tick step, both round numbers (1, 2, 2.5, 5 x 10^n), with
    `ticks` to `ticks + 2` steps: the lowest such top."""
    if value <= 0:
        return 1.0, 0.25
    best: tuple[float, float] | None = None
    for count in range(ticks, ticks + 3):
        raw = value / count
        power = 10 ** math.floor(math.log10(raw))
        for factor in (1, 2, 2.5, 5, 10):
            step = factor * power
            if step * count >= value:
                if best is None or step * count < best[0]:
                    best = (step * count, step)
                break
    assert best is not None
    return best


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg class="chart" viewBox="0 0 {width} '
            f'{height}" role="img" aria-label="{esc(title)}" preserveAspectRatio="xMidYMid '
            f'meet"><title>{esc(title)}</title>{"".join(body)}</svg>')


def _y_axis(left: float, right: float, top: float, bottom: float, y_max: float, step: float,
            fmt: Any) -> list[str]:
    out = []
    value = 0.0
    while value <= y_max + step / 1000:
        y = bottom - (bottom - top) * value / y_max
        out.append(f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(right)}" y2="{_n(y)}" '
                   f'stroke="{COLOURS["grid"]}" stroke-width="1"/>')
        out.append(f'<text x="{_n(left - 6)}" y="{_n(y + 4)}" text-anchor="end" '
                   f'class="tick">{esc(fmt(value))}</text>')
        value += step
    return out


def _int(value: float) -> str:
    return f"{round(value):,}"


def daily_stacked(daily: Sequence[dict[str, Any]], lang: str) -> str:
    """Calls per day, one bar per day stacked by outcome (handled at the bottom)."""
    words = i18n.labels(lang)
    width, height = 720, 250
    left, right, top, bottom = 46, 710, 14, 214
    totals = [sum(int(d.get(o) or 0) for o in OUTCOMES) for d in daily]
    y_max, step = nice_max(max(totals, default=0))
    body = _y_axis(left, right, top, bottom, y_max, step, _int)
    count = max(len(daily), 1)
    slot = (right - left) / count
    bar = slot * 0.72
    label_every = 1 if count <= 16 else 2 if count <= 32 else 7
    for i, day in enumerate(daily):
        x = left + slot * i + (slot - bar) / 2
        y = float(bottom)
        for outcome in OUTCOMES:
            value = int(day.get(outcome) or 0)
            if value <= 0:
                continue
            h = (bottom - top) * value / y_max
            y -= h
            body.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(bar)}" height="{_n(h)}" '
                        f'fill="{COLOURS[outcome]}"><title>{esc(day.get("date", ""))} '
                        f'{esc(words[outcome])}: {value:,}</title></rect>')
        if i % label_every == 0:
            try:
                text = i18n.short_day(i18n.parse_date(str(day["date"])), lang)
            except (KeyError, ValueError):
                text = str(day.get("date", ""))
            body.append(f'<text x="{_n(x + bar / 2)}" y="{bottom + 15}" text-anchor="middle" '
                        f'class="tick">{esc(text)}</text>')
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" '
                f'stroke="{COLOURS["axis"]}" stroke-width="1"/>')
    legend_x = float(left)
    for outcome in OUTCOMES:
        body.append(f'<rect x="{legend_x}" y="{height - 14}" width="10" height="10" '
                    f'fill="{COLOURS[outcome]}"/>')
        body.append(f'<text x="{legend_x + 14}" y="{height - 5}" class="legend">'
                    f'{esc(words[outcome])}</text>')
        legend_x += 22 + 11 * max(len(words[outcome]), 4) * (1.6 if i18n.is_chinese(lang)
                                                             else 0.62)
    return _svg(width, height, words["chart_daily"], body)


def _dec(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def last_day_with_data(daily: Sequence[dict[str, Any]]) -> int:
    """The index of the last day with a call or a cost (-1 when none): the actual line ends
    there and the forecast goes on to the period's end."""
    last = -1
    for i, day in enumerate(daily):
        if any(int(day.get(o) or 0) for o in OUTCOMES) or (_dec(day.get("cost")) or 0) > 0:
            last = i
    return last


def cumulative_cost(daily: Sequence[dict[str, Any]], budget: Any, forecast: Any,
                    currency: str | None, lang: str) -> str:
    """Cumulative cost per day (solid) up to the last day with data, the forecast on to the
    month-end figure (dashed), and the monthly budget as a horizontal line."""
    words = i18n.labels(lang)
    width, height = 720, 250
    left, right, top, bottom = 64, 650, 14, 214
    running = Decimal(0)
    points: list[Decimal] = []
    for day in daily:
        running += _dec(day.get("cost")) or Decimal(0)
        points.append(running)
    last = last_day_with_data(daily)
    budget_value = _dec(budget)
    forecast_value = _dec(forecast)
    top_value = max([float(running), float(budget_value or 0), float(forecast_value or 0)])
    y_max, step = nice_max(top_value * 1.05)
    body = _y_axis(left, right, top, bottom, y_max, step, _int)
    count = max(len(daily), 1)

    def x_at(i: float) -> float:
        return left + (right - left) * (i + 1) / count

    def y_at(value: float) -> float:
        return bottom - (bottom - top) * value / y_max

    if last >= 0:
        path = [f"{_n(left)},{_n(bottom)}"] + [f"{_n(x_at(i))},{_n(y_at(float(points[i])))}"
                                               for i in range(last + 1)]
        body.append(f'<polygon points="{" ".join(path)} {_n(x_at(last))},{_n(bottom)}" '
                    f'fill="{COLOURS["actual"]}" fill-opacity="0.10"/>')
        body.append(f'<polyline points="{" ".join(path)}" fill="none" '
                    f'stroke="{COLOURS["actual"]}" stroke-width="2.5" '
                    f'stroke-linejoin="round"/>')
        end_y = y_at(float(points[last]))
        body.append(f'<circle cx="{_n(x_at(last))}" cy="{_n(end_y)}" r="3.5" '
                    f'fill="{COLOURS["actual"]}"/>')
        if forecast_value is not None and last < count - 1:
            fy = y_at(float(forecast_value))
            body.append(f'<line x1="{_n(x_at(last))}" y1="{_n(end_y)}" x2="{_n(right)}" '
                        f'y2="{_n(fy)}" stroke="{COLOURS["forecast"]}" stroke-width="2" '
                        f'stroke-dasharray="6 4"/>')
            body.append(f'<circle cx="{_n(right)}" cy="{_n(fy)}" r="3.5" fill="white" '
                        f'stroke="{COLOURS["forecast"]}" stroke-width="2"/>')
            body.append(f'<text x="{_n(right + 6)}" y="{_n(fy + 4)}" class="tick">'
                        f'{esc(i18n.number(forecast_value))}</text>')
    if budget_value is not None:
        by = y_at(float(budget_value))
        body.append(f'<line x1="{left}" y1="{_n(by)}" x2="{right}" y2="{_n(by)}" '
                    f'stroke="{COLOURS["budget"]}" stroke-width="1.5"/>')
        body.append(f'<text x="{_n(right + 6)}" y="{_n(by + 4)}" class="tick budget">'
                    f'{esc(i18n.number(budget_value))}</text>')
    for i in range(0, count, 7 if count > 10 else 1):
        try:
            text = i18n.short_day(i18n.parse_date(str(daily[i]["date"])), lang)
        except (KeyError, ValueError, IndexError):
            continue
        body.append(f'<text x="{_n(x_at(i))}" y="{bottom + 15}" text-anchor="middle" '
                    f'class="tick">{esc(text)}</text>')
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" '
                f'stroke="{COLOURS["axis"]}" stroke-width="1"/>')
    if currency:
        body.append(f'<text x="{right + 6}" y="{bottom + 4}" class="tick">'
                    f'{esc(currency)}</text>')
    legend = [("actual", words["actual"], ""), ("forecast", words["forecast"], "6 4"),
              ("budget", words["budget"], "")]
    legend_x = float(left)
    for key, text, dash in legend:
        body.append(f'<line x1="{_n(legend_x)}" y1="{height - 9}" x2="{_n(legend_x + 18)}" '
                    f'y2="{height - 9}" stroke="{COLOURS[key]}" stroke-width="2.5"'
                    + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        body.append(f'<text x="{_n(legend_x + 23)}" y="{height - 5}" class="legend">'
                    f'{esc(text)}</text>')
        legend_x += 40 + len(text) * (11 if i18n.is_chinese(lang) else 6.5)
    return _svg(width, height, words["chart_cost"], body)


def histogram(bins: Sequence[dict[str, Any]], lang: str) -> str:
    """Calls per bucket of bot seconds; the last bucket is open (`600+`)."""
    words = i18n.labels(lang)
    width, height = 360, 230
    left, right, top, bottom = 40, 352, 12, 190
    counts = [int(b.get("calls") or 0) for b in bins]
    y_max, step = nice_max(max(counts, default=0))
    body = _y_axis(left, right, top, bottom, y_max, step, _int)
    count = max(len(bins), 1)
    slot = (right - left) / count
    for i, b in enumerate(bins):
        h = (bottom - top) * counts[i] / y_max
        x = left + slot * i + 1
        label = f"{b.get('from')}+" if b.get("to") is None else f"{b.get('from')}–{b.get('to')}"
        body.append(f'<rect x="{_n(x)}" y="{_n(bottom - h)}" width="{_n(slot - 2)}" '
                    f'height="{_n(h)}" fill="{COLOURS["bar"]}"><title>{esc(label)} '
                    f'{esc(words["seconds_short"])}: {counts[i]:,}</title></rect>')
        if i % 2 == 0 or b.get("to") is None:
            body.append(f'<text x="{_n(x + slot / 2)}" y="{bottom + 14}" text-anchor="middle" '
                        f'class="tick small">{esc(b.get("from"))}'
                        + ("+" if b.get("to") is None else "") + "</text>")
    body.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" '
                f'stroke="{COLOURS["axis"]}" stroke-width="1"/>')
    body.append(f'<text x="{_n((left + right) / 2)}" y="{height - 6}" text-anchor="middle" '
                f'class="legend">{esc(words["bot_seconds"])}</text>')
    return _svg(width, height, words["chart_histogram"], body)


def _heat(share: float) -> str:
    """White to the report's blue."""
    low, high = (247, 250, 253), (24, 78, 150)
    r, g, b = (round(lo + (hi - lo) * share) for lo, hi in zip(low, high, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(grid: Sequence[Sequence[int]], lang: str) -> str:
    """Offered calls, one row per weekday (Monday first) and one cell per hour."""
    words = i18n.labels(lang)
    names = i18n.weekdays(lang)
    width, height = 360, 230
    left, top = 38, 10
    cell_w, cell_h = 13.0, 24.0
    peak = max((max(row, default=0) for row in grid), default=0) or 1
    body = []
    for d, row in enumerate(list(grid)[:7]):
        y = top + d * cell_h
        body.append(f'<text x="{left - 5}" y="{_n(y + cell_h / 2 + 4)}" text-anchor="end" '
                    f'class="tick">{esc(names[d])}</text>')
        for h, value in enumerate(list(row)[:24]):
            x = left + h * cell_w
            body.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(cell_w - 1)}" '
                        f'height="{_n(cell_h - 1)}" fill="{_heat(int(value) / peak)}">'
                        f'<title>{esc(names[d])} {h:02d}:00 {int(value):,}</title></rect>')
    for h in range(0, 24, 3):
        body.append(f'<text x="{_n(left + h * cell_w + cell_w / 2)}" y="{_n(top + 7 * cell_h + 13)}" '
                    f'text-anchor="middle" class="tick small">{h:02d}</text>')
    # legend: a scale from 0 to the peak
    ly = top + 7 * cell_h + 24
    for k in range(10):
        body.append(f'<rect x="{_n(left + k * 14)}" y="{_n(ly)}" width="14" height="8" '
                    f'fill="{_heat(k / 9)}"/>')
    body.append(f'<text x="{_n(left - 4)}" y="{_n(ly + 8)}" text-anchor="end" class="tick small">0'
                f'</text><text x="{_n(left + 144)}" y="{_n(ly + 8)}" class="tick small">'
                f'{peak:,} {esc(words["calls"])}</text>')
    body.append(f'<text x="{_n(left + 24 * cell_w)}" y="{_n(ly + 8)}" text-anchor="end" '
                f'class="tick small">{esc(words["hour"])}</text>')
    return _svg(width, height, words["chart_heatmap"], body)


def plan_bars(plans: Sequence[dict[str, Any]], active_id: str | None, currency: str | None,
              lang: str) -> str:
    """One horizontal bar per plan, cheapest first, the active plan highlighted."""
    words = i18n.labels(lang)
    ordered = sorted(plans, key=lambda p: _dec(p.get("total")) or Decimal(0))
    row_h = 30
    width = 720
    height = 20 + row_h * max(len(ordered), 1)
    label_w, left, right = 210, 216, 560
    peak = max((float(_dec(p.get("total")) or 0) for p in ordered), default=0) or 1
    body = []
    for i, plan in enumerate(ordered):
        y = 8 + i * row_h
        active = plan.get("plan_id") == active_id
        total = _dec(plan.get("total")) or Decimal(0)
        w = (right - left) * float(total) / peak
        name = str(plan.get("name") or plan.get("plan_id") or "")
        if len(name) > 32:
            name = name[:31] + "…"
        body.append(f'<text x="{label_w}" y="{y + 17}" text-anchor="end" class="label'
                    + (' strong' if active else '') + f'">{esc(name)}</text>')
        body.append(f'<rect x="{left}" y="{y + 3}" width="{_n(max(w, 1))}" height="{row_h - 10}" '
                    f'rx="2" fill="{COLOURS["active"] if active else COLOURS["plan"]}"/>')
        note = i18n.money(total, currency)
        delta = _dec(plan.get("vs_active"))
        if active:
            note += f"  ({words['active']})"
        elif delta is not None:
            sign = "+" if delta > 0 else "−" if delta < 0 else "±"
            note += f"  ({sign}{i18n.number(abs(delta), 2)})"
        body.append(f'<text x="{_n(left + max(w, 1) + 6)}" y="{y + 17}" class="label'
                    + (' strong' if active else '') + f'">{esc(note)}</text>')
    return _svg(width, height, words["chart_plans"], body)
