"""The HTML report in a real browser: headless Chromium (`tests/chromium_support.py`) renders it
without a console message, the document parses as a whole, and a screenshot of the first
A4-sized screen is not blank: it shows the charts' colours. A control page proves the console
check sees errors.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from botmeter.reports.render import render_report
from botmeter.reports.svg import COLOURS
from tests.chromium_support import HEIGHT, WIDTH, Run, run_chromium, working_chromium
from tests.png_support import Image, decode_png
from tests.report_sample import sample_report


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    work = tmp_path_factory.mktemp("chromium")
    return working_chromium(work), work


@pytest.fixture(scope="module", params=["en", "zh-Hans"])
def report_run(request: pytest.FixtureRequest, browser: tuple[str, Path]) -> Run:
    binary, work = browser
    out = io.BytesIO()
    render_report(sample_report(), "html", request.param, out)
    page = work / f"report-{request.param}.html"
    page.write_bytes(out.getvalue())
    return run_chromium(binary, page, work)


def test_renders_without_console_messages(report_run: Run) -> None:
    assert report_run.returncode == 0, report_run.stderr[-2000:]
    assert report_run.console == []


def test_the_document_parsed_whole(report_run: Run) -> None:
    dom = report_run.dom
    assert dom.count('<svg class="chart"') == 5
    assert "<footer>" in dom and dom.rstrip().endswith("</html>")


def _hex(colour: str) -> bytes:
    return bytes.fromhex(colour.lstrip("#"))


def test_the_screenshot_is_not_blank(report_run: Run) -> None:
    image: Image = decode_png(report_run.output.read_bytes())
    assert (image.width, image.height) == (WIDTH, HEIGHT)
    colours = image.colours(step=2)
    total = sum(colours.values())
    background = colours.most_common(1)[0][1]
    assert background < total * 0.8, "one colour covers the page"
    assert len(colours) > 200, f"only {len(colours)} colours"
    dark = sum(n for rgb, n in colours.items() if sum(rgb) < 300)
    assert dark > total * 0.002, "no text"
    # the charts drew: the stacked bars' colours and the active plan's green are on screen
    for name in ("handled", "transferred", "active"):
        assert colours[_hex(COLOURS[name])] > 200, name


def test_the_console_check_sees_errors(browser: tuple[str, Path]) -> None:
    """A control page: an uncaught error and a request the CSP refuses both show up."""
    binary, work = browser
    page = work / "control.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\""
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\"></head>"
        "<body><div style=\"background:url(https://example.invalid/x.png)\">x</div>"
        "<script>notDefined()</script></body></html>")
    run = run_chromium(binary, page, work)
    assert any("example.invalid" in line for line in run.console), run.stderr[-2000:]
    assert any("Uncaught ReferenceError" in line for line in run.console), run.stderr[-2000:]
