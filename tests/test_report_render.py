"""The report renderers without a browser: HTML parsed (self-contained, 5 charts, escaped),
CSV read back (BOM for Chinese), the table's labels, and the i18n helpers."""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from botmeter.reports import i18n
from botmeter.reports.render import render_report
from tests.report_sample import empty_report, sample_report

HOSTILE = '<script>alert("x")</script> & "Co" <img src=x onerror=alert(1)>'


def rendered(report: dict[str, Any], fmt: str, lang: str) -> bytes:
    out = io.BytesIO()
    render_report(report, fmt, lang, out)
    return out.getvalue()


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False
        self.stack: list[str] = []
        self.svg_titles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"
        self.stack.append(tag)
        if attrs and dict(attrs).get("style"):
            self.styles.append(dict(attrs)["style"] or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)
        else:
            self.text.append(data)
        if len(self.stack) >= 2 and self.stack[-1] == "title" and self.stack[-2] == "svg":
            self.svg_titles.append(data)


def parse(html: str) -> Collector:
    parser = Collector()
    parser.feed(html)
    parser.close()
    return parser


@pytest.mark.parametrize("lang", i18n.LANGS)
def test_html_names_no_external_url(lang: str) -> None:
    html = rendered(sample_report(), "html", lang).decode("utf-8")
    doc = parse(html)
    for tag, attrs in doc.tags:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed", "image", "use")
        for name in ("src", "href", "xlink:href", "action", "srcset", "poster", "data"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (tag, name, value)
    css = "\n".join(doc.styles).lower()
    assert "@import" not in css
    assert not re.search(r"url\(", css), "no url() at all: nothing to fetch, not even data:"
    assert "@font-face" not in css
    # not even a namespace: the document never says http
    assert "http:" not in html and "https:" not in html and "//" not in css
    # and a browser would refuse a request anyway
    csp = [a for t, a in doc.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in (csp[0].get("content") or "")


@pytest.mark.parametrize("lang", i18n.LANGS)
def test_html_has_the_five_charts_as_inline_svg(lang: str) -> None:
    words = i18n.labels(lang)
    doc = parse(rendered(sample_report(), "html", lang).decode("utf-8"))
    charts = [a for t, a in doc.tags if t == "svg" and a.get("class") == "chart"]
    assert len(charts) == 5
    assert doc.svg_titles == [words["chart_daily"], words["chart_cost"],
                              words["chart_histogram"], words["chart_heatmap"],
                              words["chart_plans"]]
    # (a) 20 days with calls, up to 4 outcomes a day; (d) 7 x 24 cells; (e) one bar per plan
    rects = [a for t, a in doc.tags if t == "rect"]
    assert len(rects) > 60 + 7 * 24 + 3
    # (b) the dashed forecast and the budget line
    assert any(a.get("stroke-dasharray") for t, a in doc.tags if t == "line")


def test_html_is_printable_on_a4() -> None:
    html = rendered(sample_report(), "html", "en").decode("utf-8")
    assert re.search(r"@page\s*\{\s*size:\s*A4", html)
    assert "break-inside: avoid" in html and "print-color-adjust: exact" in html
    assert '"Noto Sans CJK SC"' in html and '"Microsoft YaHei"' in html


def test_html_escapes_every_text_from_the_data() -> None:
    report = sample_report(plan_name=HOSTILE)
    report["plans"][0]["name"] = HOSTILE
    report["repeat_callers"]["top"][0]["caller_number"] = "<b>13900000001</b>"
    report["by"] = "dialed_number"
    report["rows"][0]["key"] = "</td><script>x()</script>"
    html = rendered(report, "html", "en").decode("utf-8")
    doc = parse(html)
    assert not [t for t, _ in doc.tags if t in ("script", "img")]
    plain = parse(rendered(sample_report(), "html", "en").decode("utf-8"))
    assert [t for t, _ in doc.tags] == [t for t, _ in plain.tags]  # no element of the data's
    text = "".join(doc.text)
    assert HOSTILE in text  # shown as text, in the title and the plan table
    assert "<b>13900000001</b>" in text and "</td><script>x()</script>" in text
    assert "&lt;script&gt;" in html


def test_html_of_an_empty_month_without_plan() -> None:
    html = rendered(empty_report(), "html", "zh-Hans").decode("utf-8")
    doc = parse(html)
    assert len([a for t, a in doc.tags if t == "svg"]) == 5
    text = "".join(doc.text)
    assert "未配置计费方案" in text and "未设置预算" in text and "没有可比较的方案" in text


def test_html_titles_in_each_language() -> None:
    assert "November 2026" in rendered(sample_report(), "html", "en").decode()
    hans = rendered(sample_report(), "html", "zh-Hans").decode()
    hant = rendered(sample_report(), "html", "zh-Hant").decode()
    assert "2026年11月" in hans and "2026年11月" in hant
    assert "语音机器人用量报表" in hans and "語音機器人用量報表" in hant
    assert 'lang="zh-Hans"' in hans and 'lang="zh-Hant"' in hant
    assert "1,179.15" in hans  # the same number format in Chinese


def read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


@pytest.mark.parametrize("lang", ["zh-Hans", "zh-Hant"])
def test_csv_for_chinese_has_a_bom(lang: str) -> None:
    data = rendered(sample_report(), "csv", lang)
    assert data.startswith(b"\xef\xbb\xbf")
    rows = read_csv(data)
    assert rows[0][0] == i18n.labels(lang)["by_day"]
    assert rows[0][4] == {"zh-Hans": "转接人工", "zh-Hant": "轉接真人"}[lang]


def test_csv_reads_back_with_the_csv_module() -> None:
    report = sample_report()
    data = rendered(report, "csv", "en")
    assert not data.startswith(b"\xef\xbb\xbf")
    rows = read_csv(data)
    assert rows[0] == ["Day", "Offered", "Bot answered", "Handled by the bot", "Transferred",
                       "Abandoned", "Failed", "Answer rate", "Containment", "Transfer rate",
                       "Transfers answered", "Cost"]
    body, blank, total = rows[1:31], rows[31], rows[32]
    assert len(rows) == 33 and blank == []
    for line, row in zip(body, report["rows"], strict=True):
        assert line[0] == row["key"]
        assert [int(x) for x in line[1:7]] == [row[k] for k in (
            "offered", "bot_answered", "handled", "transferred", "abandoned", "failed")]
        for cell, key in zip(line[7:11], ("answer_rate", "containment_rate", "transfer_rate",
                                          "transfer_answered_rate"), strict=True):
            assert (cell == "") if row[key] is None else float(cell) == pytest.approx(row[key])
        assert line[11] == row["cost"]
    totals = report["totals"]
    assert total[0] == "Total" and int(total[1]) == totals["offered"] == 1049
    assert total[11] == totals["cost"]
    # plain digits: no thousands separator anywhere, so spreadsheets read numbers
    assert all(re.fullmatch(r"-?\d+(\.\d+)?|", cell) for line in rows[1:] for cell in line[1:])


def test_csv_of_an_empty_month_has_empty_rates_and_cost() -> None:
    rows = read_csv(rendered(empty_report(), "csv", "en"))
    assert rows[-1][0] == "Total" and rows[-1][1] == "0" and rows[-1][7:] == [""] * 5


def test_csv_by_outcome_translates_the_keys() -> None:
    report = sample_report(by="outcome")
    report["rows"] = [dict(report["rows"][0], key=k) for k in ("handled", "transferred")]
    rows = read_csv(rendered(report, "csv", "zh-Hant"))
    assert rows[0][0] == "結果" and [r[0] for r in rows[1:3]] == ["機器人獨立處理", "轉接真人"]


@pytest.mark.parametrize("lang,expected", [
    ("en", ["Voice bot usage report — November 2026", "Service level (SLA)", "Plan advice",
            "Month-end forecast", "Repeat callers", "Caller satisfaction", "Missed",
            "Handled by the bot", "CNY 1,179.15", "Within budget"]),
    ("zh-Hans", ["语音机器人用量报表 — 2026年11月", "服务水平协议", "方案建议", "月末预测",
                 "重复来电", "客户满意度", "未达标", "转接人工", "预算内"]),
    ("zh-Hant", ["語音機器人用量報表 — 2026年11月", "服務水準協議", "方案建議", "月底預測",
                 "重複來電", "客戶滿意度", "未達標", "轉接真人", "預算內"]),
])
def test_table_has_the_translated_labels(lang: str, expected: list[str]) -> None:
    text = rendered(sample_report(), "table", lang).decode("utf-8")
    for label in expected:
        assert label in text, label
    assert "\x1b[" not in text  # no terminal codes into a file


def test_table_shows_data_as_text_not_markup() -> None:
    text = rendered(sample_report(plan_name="[bold red]x[/] \x1b[2J"), "table", "en").decode()
    assert "[bold red]x[/]" in text and "\x1b" not in text


def test_table_of_an_empty_month() -> None:
    text = rendered(empty_report(), "table", "en").decode()
    assert "no plan configured" in text and "No budget set" in text and "n/a" in text


def test_unknown_language_or_format_names_the_choices() -> None:
    with pytest.raises(ValueError, match="en, zh-Hans, zh-Hant"):
        render_report(sample_report(), "html", "fr", io.BytesIO())
    with pytest.raises(ValueError, match="table, csv, json, html"):
        render_report(sample_report(), "pdf", "en", io.BytesIO())
    with pytest.raises(ValueError, match="zh-Hans"):
        i18n.labels("zh-CN")


def test_json_is_the_report_itself() -> None:
    import json

    assert json.loads(rendered(sample_report(), "json", "en")) == sample_report()


def test_every_language_has_every_label_and_they_differ() -> None:
    en, hans, hant = (i18n.labels(lang) for lang in i18n.LANGS)
    assert en.keys() == hans.keys() == hant.keys()
    assert (hans["report"], hans["transferred"], hans["csat"]) == ("用量报表", "转接人工", "客户满意度")
    assert (hant["report"], hant["transferred"], hant["csat"]) == ("用量報表", "轉接真人", "客戶滿意度")
    assert sum(hans[k] != hant[k] for k in hans) > len(hans) // 2


def test_number_and_date_formats() -> None:
    from datetime import date

    assert i18n.number("1234.5678", 2) == "1,234.57" and i18n.number(1234567) == "1,234,567"
    assert i18n.number(None) == "" and i18n.percent(0.9712) == "97.1%"
    assert i18n.money("2500", "CNY") == "CNY 2,500.00"
    assert i18n.month_title(2026, 11, "en") == "November 2026"
    assert i18n.month_title(2026, 11, "zh-Hans") == "2026年11月"
    assert i18n.day_text(date(2026, 11, 27), "zh-Hant") == "2026年11月27日"
    assert i18n.day_text(date(2026, 11, 27), "en", year=False) == "27 Nov"
    assert i18n.seconds(81234.5, "en") == "22 h 33 min"
    assert i18n.seconds(81234.5, "zh-Hans") == "22 小时 33 分"
    assert i18n.weekdays("zh-Hant")[0] == "週一" and i18n.weekdays("zh-Hans")[0] == "周一"
