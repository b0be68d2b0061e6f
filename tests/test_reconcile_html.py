"""`botmeter reconcile --format html`: the dispute letter's annex.

A real calls database (the lab capture replayed, rated under the per-minute plan: 0.12 CNY for
a bot call of 3 s or more, billed as 60 s; nothing below 3 s), a hand-made invoice in which each
class is made on purpose, and the command run through the CLI. The annex is parsed and read the
way a reader would: its totals, each class's lines with their evidence, the problems, escaping,
the language, nothing fetched; and in headless Chromium, printed on A4.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from botmeter.config import load_config
from botmeter.plans import active_series, load_plan_book
from botmeter.reconcile.invoice import Invoice, Problems
from botmeter.reconcile.mapping import load_mapping
from botmeter.reconcile.reconciler import reconcile
from botmeter.reconcile.render_html import write_html
from botmeter.reconcile.words import WORDS
from botmeter.storage.store import CallStore
from tests.chromium_support import print_pdf, working_chromium
from tests.html_tree import Node, parse_html
from tests.png_support import decode_png

from .conftest import CONFIG_TEMPLATE, LAB_CAPTURE
from .rating_support import SHANGHAI, local_ms, make_call
from .reconcile_support import HEADER, PLANS, cli, with_sessions
from .reconcile_support import MAPPING as SHARED_MAPPING

HOSTILE = '<script>alert("x")</script>'
#: the invoice's file name is the user's: it is shown, so it is escaped too
INVOICE_NAME = "usage <2026-11> & co.csv"
MAPPING = SHARED_MAPPING + 'timezone = "Asia/Shanghai"\n'  # the lines' times are local
#: one line per class, made on purpose (line numbers count the header as line 1)
LINES = [
    ("", "13900010001", "2026-11-26 23:25:37", "60", "0.12"),  # 2: match
    ("", "13900010002", "2026-11-26 23:25:40", "120", "0.24"),  # 3: billed 120 s, botmeter 0 s
    ("sess-0003", "+86 139 0001 0003", "2026-11-26 23:25:42", "60", "0.12"),  # 4: by session
    ("", "13900010004", "2026-11-26 23:25:45", "60", "0.15"),  # 5: 0.15, botmeter 0.12
    (HOSTILE, "13900099999", "2026-11-26 23:40:00", "60", "0.12"),  # 6: no such call
    ("", "13900010005", "yesterday", "60", "0.12"),  # 7: unreadable
    ("", "13900010007", "2026-11-26 23:25:51", "60", "0.12"),  # 8: match
]
NOT_BILLED = {"1795706746.12", "1795706748.30", "1795706755.48", "1795706757.49",
              "1795706759.51", "1795706760.53"}


def write_setup(folder: Path, lines: list[tuple[str, ...]]) -> tuple[Path, Path, Path]:
    """A config (per-minute plan active), the mapping, and an invoice of `lines`."""
    config = folder / "botmeter.toml"
    config.write_text(CONFIG_TEMPLATE.format(
        port=5038, secret="x", auth="md5", ping_interval=10.0, ping_timeout=5.0,
        db=folder / "calls.db") + PLANS,
        encoding="utf-8")
    mapping = folder / "vendor.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    invoice = folder / INVOICE_NAME
    with invoice.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *lines])
    return config, mapping, invoice


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The lab capture's calls, one with the session id the vendor also wrote."""
    config, mapping, invoice = write_setup(tmp_path_factory.mktemp("lab"), LINES)
    capture = config.parent / "lab-with-session.ami"  # one call's bot sends its session id
    capture.write_bytes(with_sessions(LAB_CAPTURE.read_bytes(), {"1795706741.6": "sess-0003"}))
    assert cli(config, "replay", str(capture)).exit_code == 0
    return config, mapping, invoice


def run(setup: tuple[Path, Path, Path], fmt: str, *args: str) -> str:
    config, mapping, invoice = setup
    out = invoice.parent / f"out.{fmt}"
    result = cli(config, "reconcile", "--period", "2026-11", "--invoice", str(invoice),
                 "--mapping", str(mapping), "--format", fmt, "--out", str(out), *args)
    assert result.exit_code == 0, result.output
    return out.read_text(encoding="utf-8")


def annex(setup: tuple[Path, Path, Path], *args: str) -> tuple[str, Node]:
    html = run(setup, "html", *args)
    return html, parse_html(html)


def table_after(doc: Node, heading: str) -> Node:
    """The first table after the <h2> or <h3> whose text starts with `heading`."""
    seen = False
    for node in doc.walk():
        if node.tag in ("h2", "h3") and node.text().startswith(heading):
            seen = True
        elif seen and node.tag == "table":
            return node
    raise AssertionError(f"no table after {heading!r}")


def body_rows(table: Node) -> list[list[str]]:
    return [[cell.text() for cell in row.all() if cell.tag in ("th", "td")]
            for body in table.all("tbody") for row in body.all("tr")]


def evidence(doc: Node, heading: str) -> list[list[list[str]]]:
    """Each line of a class's table: its rows (the vendor's, botmeter's), each row's cells."""
    return [[[cell.text() for cell in row.all() if cell.tag in ("th", "td")]
             for row in line.all("tr")] for line in table_after(doc, heading).all("tbody", "line")]


def test_totals_per_class_and_the_disputed_amount(lab: tuple[Path, Path, Path]) -> None:
    _, doc = annex(lab)
    totals = table_after(doc, "Totals per class")
    assert body_rows(totals) == [
        ["Match", "3", "0.36", "0.36"],
        ["Duration differs", "1", "0.24", "0.00"],
        ["Amount differs", "1", "0.15", "0.12"],
        ["Billed, not recorded", "1", "0.12", "0.00"],
        ["Recorded, not billed", "6", "0.00", "0.36"],
    ]
    assert [cell.text() for cell in totals.one("tfoot").all("td")] == [
        "Total", "12", "0.87", "0.84"]
    # what the vendor billed above botmeter: 0.24 (line 3) + 0.03 (line 5) + 0.12 (line 6)
    assert doc.one("div", "disputed").one("div", "value").text() == "0.39 CNY"
    # the annex says what the engine says
    summary = json.loads(run(lab, "json"))
    assert summary["disputed_amount"] == "0.39"
    assert body_rows(totals) == [
        [WORDS["en"][name], str(c["lines"]), c["vendor_amount"], c["botmeter_amount"]]
        for name, c in summary["classes"].items()]
    cards = {card.one("div", "label").text(): card.one("div", "value").text()
             for card in doc.all("div", "kpi")}
    assert cards == {"Disputed amount": "0.39 CNY", "Vendor amount": "0.87 CNY",
                     "botmeter amount": "0.84 CNY", "Lines in dispute": "3"}


def test_the_head_names_the_period_plan_currency_invoice_and_time_zone(
        lab: tuple[Path, Path, Path]) -> None:
    _, doc = annex(lab)
    assert doc.one("h1").text() == "Invoice reconciliation — November 2026"
    meta = " ".join(p.text() for p in doc.one("header").all("p", "meta"))
    for part in ("Period: 1 Nov 2026 – 30 Nov 2026 (2026-11)", "Time zone: Asia/Shanghai",
                 "Plan: per-minute", "Currency: CNY", f"Invoice: {lab[2]}", "Vendor lines: 7"):
        assert part in meta


def test_each_class_is_listed_with_the_evidence_of_its_lines(
        lab: tuple[Path, Path, Path]) -> None:
    _, doc = annex(lab)
    assert [h3.one("span", "mark").text() for h3 in doc.all("h3")] == [
        "Duration differs", "Amount differs", "Billed, not recorded", "Recorded, not billed"]
    assert [h3.one("span", "count").text() for h3 in doc.all("h3")] == [
        "1 line", "1 line", "1 line", "6 lines"]
    # vendor row above botmeter row; times in the plan's zone; how and how far apart they matched
    assert evidence(doc, "Duration differs") == [[
        ["Vendor", "3", "—", "13900010002", "2026-11-26 23:25:40", "120 s", "0.24",
         "caller & time", "0.208 s"],
        ["botmeter", "1795706738.4 Transferred", "—", "13900010002", "2026-11-26 23:25:39.792",
         "0 s", "0.0000"]]]
    assert evidence(doc, "Amount differs") == [[
        ["Vendor", "5", "—", "13900010004", "2026-11-26 23:25:45", "60 s", "0.15",
         "caller & time", "0.383 s"],
        ["botmeter", "1795706743.10 Transferred", "—", "13900010004", "2026-11-26 23:25:44.617",
         "60 s", "0.1200"]]]
    assert evidence(doc, "Billed, not recorded") == [[
        ["Vendor", "6", HOSTILE, "13900099999", "2026-11-26 23:40:00", "60 s", "0.12", "—",
         "—"]]]
    not_billed = evidence(doc, "Recorded, not billed")
    assert {line[0][1].split()[0] for line in not_billed} == NOT_BILLED
    assert all(len(line) == 1 and line[0][0] == "botmeter" for line in not_billed)
    # the field the class says differs is marked, on both sides
    for heading, column in (("Duration differs", 5), ("Amount differs", 6)):
        for row in table_after(doc, heading).all("tr")[1:]:
            tds = row.all("td")
            assert [i for i, td in enumerate(tds) if "diff" in td.classes] == [column - 1]
    assert "Matched lines not listed: 3 (--all lists them)." in doc.text()


def test_all_lists_the_matches_too(lab: tuple[Path, Path, Path]) -> None:
    _, doc = annex(lab, "--all")
    assert [h3.one("span", "mark").text() for h3 in doc.all("h3")][0] == "Match"
    matches = evidence(doc, "Match")
    assert [line[0][1] for line in matches] == ["2", "4", "8"]
    # matched by session id although the vendor wrote the caller in international form
    assert matches[1] == [
        ["Vendor", "4", "sess-0003", "+86 139 0001 0003", "2026-11-26 23:25:42", "60 s", "0.12",
         "session id", "0.165 s"],
        ["botmeter", "1795706741.6 Handled by the bot", "sess-0003", "13900010003",
         "2026-11-26 23:25:42.165", "60 s", "0.1200"]]
    assert "Matched lines not listed" not in doc.text()


def test_the_problems_are_listed_as_file_line_message(lab: tuple[Path, Path, Path]) -> None:
    _, doc = annex(lab)
    problems = doc.one("ol", "problems").all("li")
    assert [li.text() for li in problems] == [
        f"{lab[2]}:7: started_at: 'yesterday' is not a time (ISO 8601, e.g. "
        "2026-11-03T09:15:02+08:00)"]


def test_text_from_outside_is_escaped(lab: tuple[Path, Path, Path]) -> None:
    html, doc = annex(lab)
    assert "<script" not in html.lower() and "&lt;script&gt;" in html
    assert "<2026-11>" not in html and "usage &lt;2026-11&gt; &amp; co.csv" in html
    assert not doc.all("script")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    # and a reader sees the text as the vendor and the user wrote it
    assert evidence(doc, "Billed, not recorded")[0][0][2] == HOSTILE
    assert INVOICE_NAME in doc.one("header").text()
    assert doc.one("ol", "problems").text().startswith(str(lab[2]))


def test_in_the_reports_language(lab: tuple[Path, Path, Path]) -> None:
    _, doc = annex(lab, "--lang", "zh-Hans")
    assert doc.one("html").attrs["lang"] == "zh-Hans"
    assert doc.one("h1").text() == "账单核对 — 2026年11月"
    assert [row[0] for row in body_rows(table_after(doc, "按类别合计"))] == [
        "一致", "时长不符", "金额不符", "已计费但无记录", "有记录但未计费"]
    assert doc.one("div", "disputed").one("div", "label").text() == "争议金额"
    assert evidence(doc, "时长不符")[0][0][5:8] == ["120 秒", "0.24", "主叫与时间"]
    assert evidence(doc, "时长不符")[0][1][1] == "1795706738.4 转接人工"
    assert "账单中的问题" in [h2.text() for h2 in doc.all("h2")]
    for english in ("Duration differs", "Disputed amount", "Vendor", "Problems"):
        assert english not in doc.text()


def test_nothing_is_fetched_and_nothing_runs(lab: tuple[Path, Path, Path]) -> None:
    html, doc = annex(lab, "--all")
    for node in doc.walk():
        assert node.tag not in ("script", "link", "img", "iframe", "object", "embed")
        for name, value in node.attrs.items():
            assert not name.startswith("on"), (node.tag, name)
            assert not (value or "").strip().lower().startswith(("http:", "https:", "//"))
    assert "http:" not in html and "https:" not in html
    css = " ".join(style.text() for style in doc.all("style")).lower()
    assert "url(" not in css and "@import" not in css and "@font-face" not in css
    policy = next(m.attrs["content"] for m in doc.all("meta")
                  if m.attrs.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in (policy or "")


def test_the_words_are_the_same_in_every_language() -> None:
    keys = {lang: set(words) for lang, words in WORDS.items()}
    assert keys["zh-Hans"] == keys["en"] == keys["zh-Hant"]
    for key in keys["en"]:
        fields = {lang: {part.split("}")[0] for part in words[key].split("{")[1:]}
                  for lang, words in WORDS.items()}
        assert fields["zh-Hans"] == fields["en"] == fields["zh-Hant"], key


def test_more_problems_than_listed_says_how_many(tmp_path: Path) -> None:
    config, mapping, invoice = write_setup(tmp_path, [
        ("", "13900010001", f"bad {n}", "60", "0.12") for n in range(1003)])
    assert cli(config, "replay", str(LAB_CAPTURE)).exit_code == 0
    _, doc = annex((config, mapping, invoice))
    assert "1,003 problems; the first 1,000 are listed" in doc.text()
    items = doc.one("ol", "problems").all("li")
    assert len(items) == 1000 and items[-1].text().startswith(f"{invoice}:1001: started_at:")


def test_lines_are_written_as_they_are_read(lab: tuple[Path, Path, Path]) -> None:
    """Each line is in the output before the next one is read from the database."""
    config, mapping, invoice = lab
    cfg = load_config(config)
    series = active_series(cfg, load_plan_book(cfg))
    result = reconcile(cfg.store_path(), Invoice(invoice, load_mapping(mapping), "CNY",
                                                 Problems()), series, "2026-11")
    try:
        out = io.StringIO()
        written_before: list[int] = []
        read = result.lines

        def lines(classes: tuple[str, ...]):  # type: ignore[no-untyped-def]
            for line in read(classes):
                written_before.append(out.getvalue().count('<tbody class="line">'))
                yield line

        result.lines = lines  # type: ignore[method-assign]
        write_html(result, "en", out, all_lines=True)
    finally:
        result.close()
    assert written_before == list(range(12))
    assert out.getvalue().count('<tbody class="line">') == 12


# In a browser: printed on A4, a class's table head repeated on every page, no line split.

CALLS = 60


@pytest.fixture(scope="module")
def long_annex(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An annex of several pages: 60 calls, each billed 66 s where botmeter billed 60."""
    folder = tmp_path_factory.mktemp("long")
    lines = []
    calls = []
    for i in range(CALLS):
        call = make_call(f"c{i:04d}", bot=30.0, end_ms=local_ms(2026, 11, 10, 9) + i * 600_000)
        calls.append(call._replace(caller_number=f"1390000{i:04d}"))
        answered = datetime.fromtimestamp(call.bot_answered_at or 0, SHANGHAI)
        lines.append((f"V{i:04d}", f"1390000{i:04d}", answered.strftime("%Y-%m-%d %H:%M:%S"),
                      "66", "0.12"))
    config, mapping, invoice = write_setup(folder, lines)
    store = CallStore(load_config(config).store_path())
    store.save(calls)
    store.close()
    assert cli(config, "rerate", "--period", "2026-11").exit_code == 0
    page = folder / "annex.html"
    page.write_text(run((config, mapping, invoice), "html"), encoding="utf-8")
    return page


@pytest.fixture(scope="module")
def printed(long_annex: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("chromium")
    binary = working_chromium(work)
    result = print_pdf(binary, long_annex, work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.console == []
    return result.output


def test_prints_on_a4(printed: Path) -> None:
    pdf = printed.read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 2
    boxes = [[float(n) for n in box.split()]
             for box in re.findall(rb"/MediaBox\s*\[([0-9. ]+)\]", pdf)]
    # A4 is 595.28 x 841.89 points (210 x 297 mm)
    assert boxes and all(abs(x1 - x0 - 595.28) < 1 and abs(y1 - y0 - 841.89) < 1
                         for x0, y0, x1, y1 in boxes)


def _pdf_tool(name: str) -> str:
    tool = shutil.which(name)
    if tool is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install poppler-utils)")
    return tool


def test_every_page_repeats_the_head_and_no_line_is_split(printed: Path) -> None:
    text = subprocess.run([_pdf_tool("pdftotext"), "-layout", str(printed), "-"],
                          capture_output=True, text=True, check=True).stdout
    pages = text.split("\f")
    with_lines = [page for page in pages if "V00" in page]
    assert len(with_lines) >= 2, "the lines fit on one page: the test proves nothing"
    for page in with_lines:
        assert "Session" in page and "Duration" in page  # the table's head
    for i in range(CALLS):
        vendor = [n for n, page in enumerate(pages) if f"V{i:04d}" in page]
        mine = [n for n, page in enumerate(pages) if f"c{i:04d}" in page]
        assert len(vendor) == 1 and vendor == mine, (i, vendor, mine)


def test_the_printed_pages_have_no_dark_background(printed: Path, tmp_path: Path) -> None:
    subprocess.run([_pdf_tool("pdftoppm"), "-png", "-r", "40", str(printed),
                    str(tmp_path / "page")], check=True)
    shots = sorted(tmp_path.glob("page*.png"))
    assert len(shots) >= 2
    for shot in shots:
        colours = decode_png(shot.read_bytes()).colours(step=1)
        dark = sum(n for rgb, n in colours.items() if sum(rgb) < 300)
        assert dark < sum(colours.values()) * 0.05, shot.name
