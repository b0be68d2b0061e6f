"""The report's `rows` as CSV, for spreadsheets.

- One line per row, the row's keys as columns (`key` first, named after `by`: "Day", "日期"),
  header names in the chosen language.
- Then a blank line and a totals line (first cell "Total"/"合计"/"合計", the `totals` counts,
  rates and cost): a spreadsheet shows it under the rows, and a script reading the rows stops
  at the blank line.
- Counts as plain integers, rates as fractions from 0 to 1 with up to 4 decimals (0.9712; format
  the column as a percentage in the spreadsheet), costs as the report's decimal strings; no
  thousands separators; an empty cell for null (a rate whose denominator is 0, no plan).
- UTF-8, with a byte order mark for zh-Hans and zh-Hant (Excel on Chinese Windows reads a CSV
  without one in the local code page and garbles the labels), none for en. Lines end in CRLF
  (the csv module's default, what Excel writes).
"""

from __future__ import annotations

import csv
import io
from typing import Any, BinaryIO

from . import i18n
from .render_html import BY_LABELS, ROW_COLUMNS, row_key

COLUMNS = ("key", *ROW_COLUMNS)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(round(value, 6), "f").rstrip("0").rstrip(".") or "0"
    return value


def render_csv(report: dict[str, Any], lang: str, out: BinaryIO) -> None:
    words = i18n.labels(lang)
    by = str(report.get("by") or "day")
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow([words.get(BY_LABELS.get(by, ""), by)] + [words[c] for c in ROW_COLUMNS])
    for row in report.get("rows") or []:
        writer.writerow([row_key(row.get("key"), by, words)]
                        + [_cell(row.get(c)) for c in ROW_COLUMNS])
    totals = report.get("totals") or {}
    writer.writerow([])
    writer.writerow([words["total"]] + [_cell(totals.get(c)) for c in ROW_COLUMNS])
    out.write(text.getvalue().encode("utf-8-sig" if i18n.is_chinese(lang) else "utf-8"))
