"""`render_report`: the report `build_report` made, for people (table, HTML) or spreadsheets
(CSV); JSON is the dict itself."""

from __future__ import annotations

import io
import json
from typing import Any, BinaryIO

from . import i18n

FORMATS = ("table", "csv", "json", "html")


def render_report(report: dict[str, Any], fmt: str, lang: str, out: BinaryIO) -> None:
    """Write `report` to `out` as bytes (UTF-8). A ValueError for an unknown format or
    language names the choices."""
    i18n.check_lang(lang)
    if fmt == "html":
        from .render_html import render_html

        out.write(render_html(report, lang).encode("utf-8"))
    elif fmt == "csv":
        from .render_csv import render_csv

        render_csv(report, lang, out)
    elif fmt == "table":
        from .render_table import render_table

        text = io.StringIO()
        render_table(report, lang, text)
        out.write(text.getvalue().encode("utf-8"))
    elif fmt == "json":
        out.write((json.dumps(report, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
