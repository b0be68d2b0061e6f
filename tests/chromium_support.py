"""Headless Chromium for the HTML tests (Debian's `chromium` package; `.ci/run` installs it):
a page rendered to a screenshot with its DOM, or printed to PDF, and its console messages.

Console messages: Chromium run with `--enable-logging=stderr --v=0` writes each one to stderr as
`INFO:CONSOLE:<line>] "<message>", source: ...` (an uncaught error, a console.error, and a
Content-Security-Policy violation, which is what any attempt to fetch something from the
network becomes under the pages' `default-src 'none'`). The pages have no script, so any
CONSOLE line is a failure. DNS is mapped to nothing (`--host-resolver-rules`), so a test can
never reach the network either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

WIDTH, HEIGHT = 1240, 1754  # A4 at 150 dpi


@dataclass
class Run:
    returncode: int
    dom: str
    console: list[str]
    stderr: str
    output: Path  # the screenshot (PNG) or the printed PDF


def _run(binary: str, page: Path, work: Path, output: Path, *action: str) -> Run:
    env = dict(os.environ, HOME=str(work))
    proc = subprocess.run(
        [binary, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--hide-scrollbars", f"--user-data-dir={work / 'profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
         *action, page.as_uri()],
        capture_output=True, text=True, timeout=60, env=env, cwd=work)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line
               or "Uncaught" in line]
    return Run(proc.returncode, proc.stdout, console, proc.stderr, output)


def run_chromium(binary: str, page: Path, work: Path) -> Run:
    """The page on an A4-sized screen: a screenshot and the DOM as parsed."""
    shot = page.with_suffix(".png")
    return _run(binary, page, work, shot, f"--window-size={WIDTH},{HEIGHT}",
                f"--screenshot={shot}", "--dump-dom")


def print_pdf(binary: str, page: Path, work: Path) -> Run:
    """The page printed (print media, the page's own @page size), without the browser's
    header and footer."""
    pdf = page.with_suffix(".pdf")
    return _run(binary, page, work, pdf, "--no-pdf-header-footer", f"--print-to-pdf={pdf}")


def working_chromium(work: Path) -> str:
    """Chromium's path once it rendered a probe page; the test is skipped without it."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run "
                    "installs it)")
    probe = work / "probe.html"
    probe.write_text("<!DOCTYPE html><title>probe</title><p>ok</p>")
    try:
        run = run_chromium(binary, probe, work)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"chromium cannot run here: {e}")
    if run.returncode != 0 or "<p>ok</p>" not in run.dom:
        pytest.skip(f"chromium cannot run here (exit {run.returncode}): {run.stderr[-500:]}")
    return binary
