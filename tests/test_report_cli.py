"""`botmeter report` in a subprocess, and the running agent's budget warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from botmeter.rating import PlanBook, rate_calls
from botmeter.reports.budget import check_budget
from botmeter.storage.store import CallStore
from tests.rating_support import local_ms
from tests.test_report_metrics import CALLS, CHEAP, SIMPLE, call, write_plans

AGENT = Path(__file__).resolve().parent.parent / "agent"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    book = write_plans(tmp_path / "plans", SIMPLE, CHEAP)
    store = CallStore(tmp_path / "calls.db")
    store.save(CALLS, rate_calls(CALLS, book.series("simple")))
    store.close()
    config = tmp_path / "botmeter.toml"
    config.write_text("""
[agent]
id = "a"
[ami]
username = "u"
secret = "s"
[calls]
inbound_numbers = ["4000"]
[bot]
contexts = ["bot"]
[plans]
dir = "plans"
active = "simple"
[store]
path = "calls.db"
[budget]
monthly = "150.00"
""")
    return config


def report(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(AGENT)}
    return subprocess.run([sys.executable, "-m", "botmeter.cli", "--config", str(config),
                           "report", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def test_json_report(site: Path) -> None:
    done = report(site, "--period", "2026-11", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["totals"]["offered"] == 8 and data["totals"]["cost"] == "9.0000"
    assert data["budget"]["monthly"] == "150.00"
    assert data["period"]["timezone"] == "Asia/Shanghai"  # the active plan's zone
    assert [p["plan_id"] for p in data["plans"]] == ["cheap", "simple"]


def test_window_and_out(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = report(site, "--from", "2026-11-02", "--to", "2026-11-03T00:00", "--by", "hour",
                  "--format", "json", "--out", str(out))
    assert done.returncode == 0 and done.stdout == "", done.stderr
    data = json.loads(out.read_text())
    assert data["period"]["from"] == "2026-11-02T00:00:00+08:00"
    assert data["totals"]["offered"] == 2
    assert [r["key"] for r in data["rows"] if r["offered"]] == ["10", "12"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.json")]


def test_report_timezone_from_config(site: Path) -> None:
    site.write_text(site.read_text() + '[report]\ntimezone = "UTC"\n')
    data = json.loads(report(site, "--period", "2026-11", "--format", "json").stdout)
    assert data["period"]["from"] == "2026-11-01T00:00:00+00:00"
    assert data["totals"]["offered"] == 8


def test_without_plans(site: Path) -> None:
    text = site.read_text().replace('[plans]\ndir = "plans"\nactive = "simple"\n', "")
    site.write_text(text.replace('[budget]\nmonthly = "150.00"\n', ""))
    done = report(site, "--period", "2026-11", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["period"]["timezone"] == "UTC"
    assert data["totals"]["cost"] is None and data["plans"] == [] and data["sla"] == []
    assert data["forecast"] is None and data["budget"] is None


@pytest.mark.parametrize(("args", "words"), [
    (["--period", "2026-13"], "is not a period"),
    (["--period", "2026-11", "--from", "2026-11-01", "--to", "2026-11-02"], "not both"),
    (["--from", "2026-11-02", "--to", "2026-11-01"], "--from must be before --to"),
    (["--from", "2026-11-02", "--to", "2026-11-02"], "--from must be before --to"),
    (["--from", "yesterday", "--to", "2026-11-02"], "is not an ISO 8601 date or time"),
    (["--from", "2026-11-01"], "give both --from and --to"),
    (["--by", "month"], "Invalid value for '--by'"),
    (["--db", "missing.db", "--format", "json"], "no database here"),
])
def test_bad_options_one_line(site: Path, args: list[str], words: str) -> None:
    done = report(site, *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert done.stderr.startswith("botmeter: ")


def test_bad_config_one_line(site: Path) -> None:
    site.write_text(site.read_text().replace('"150.00"', "150"))
    done = report(site, "--format", "json")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "budget.monthly" in done.stderr


# -- the running agent's budget warning ------------------------------------------------

def warnings(logs: list[dict]) -> list[tuple[float, str]]:
    return [(e["threshold"], e["period"]) for e in logs
            if e["event"] == "budget threshold reached"]


def test_budget_warning_once_per_threshold(tmp_path: Path) -> None:
    """Fees 100 + 10 reach 80% of 130 at once; 14 calls at 1.50 (21.00) take it to 131."""
    series = write_plans(tmp_path / "plans", SIMPLE).series("simple")
    path = tmp_path / "calls.db"
    store = CallStore(path)
    clock = local_ms(2026, 11, 10) / 1000
    monthly = Decimal("130.00")
    with capture_logs() as logs:
        assert check_budget(store, series, monthly, clock) == [Decimal("0.8")]
        assert check_budget(store, series, monthly, clock + 300) == []
        calls = [call(f"c{i}", 9, 9 + i % 10) for i in range(14)]
        store.save(calls, rate_calls(calls, series))
        assert check_budget(store, series, monthly, clock + 600) == [Decimal("1.0")]
        assert check_budget(store, series, monthly, clock + 900) == []
    assert warnings(logs) == [(0.8, "2026-11"), (1.0, "2026-11")]
    over = [e for e in logs if e["event"] == "budget threshold reached"][1]
    assert (over["amount"], over["budget"], over["currency"]) == ("131.00", "130.00", "CNY")
    assert over["log_level"] == "warning"
    store.close()

    restarted = CallStore(path)  # a restart remembers what was said
    with capture_logs() as logs:
        assert check_budget(restarted, series, monthly, clock + 1200) == []
        # a new month: its fees alone reach 80% again
        assert check_budget(restarted, series, monthly, local_ms(2026, 12, 1, 0, 5) / 1000) == [
            Decimal("0.8")]
    assert warnings(logs) == [(0.8, "2026-12")]
    rows = restarted.db.conn.execute(
        "SELECT period, threshold FROM budget_alerts ORDER BY 1, 2").fetchall()
    assert rows == [("2026-11", "0.8"), ("2026-11", "1.0"), ("2026-12", "0.8")]
    restarted.close()


def test_budget_watch_thread(tmp_path: Path) -> None:
    from botmeter.reports.budget import BudgetWatch

    series = write_plans(tmp_path / "plans", SIMPLE).series("simple")
    path = tmp_path / "calls.db"
    CallStore(path).close()
    watch = BudgetWatch(lambda: CallStore(path), series, Decimal("100"),
                        clock=lambda: local_ms(2026, 11, 10) / 1000, interval=0.05)
    with capture_logs() as logs:
        watch.start()
        import time

        deadline = time.monotonic() + 5
        while len(warnings(logs)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        watch.stop()
    assert warnings(logs) == [(0.8, "2026-11"), (1.0, "2026-11")]
    assert PlanBook  # the plan book is what the agent loads the series from


def test_the_report_names_its_plan_and_grouping(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    from botmeter.rating import PlanBook
    from botmeter.reports.metrics import Pricing, build_report
    from botmeter.reports.window import Window
    from botmeter.storage.store import CallStore

    from .rating_support import PLANS_DIR

    series = PlanBook.load(PLANS_DIR).series("per-minute")
    store = CallStore(tmp_path / "c.db")
    try:
        window = Window.month("2026-11", ZoneInfo("Asia/Shanghai"))
        report = build_report(store, window, "hour", Pricing(active=series, plans=[series]))
        assert report["plan"] == {"plan_id": "per-minute", "name": series.latest.name}
        assert report["by"] == "hour"
        assert build_report(store, window, "day", Pricing())["plan"] is None
    finally:
        store.close()


def test_a_window_longer_than_400_days_is_refused_in_one_line(tmp_path: Path,
                                                              write_config) -> None:
    import subprocess
    import sys

    from botmeter.storage.store import CallStore

    CallStore(tmp_path / "calls.db").close()
    config = write_config()
    done = subprocess.run([sys.executable, "-m", "botmeter.cli", "--config", str(config),
                           "report", "--from", "0002-01-01", "--to", "9999-01-01",
                           "--format", "json"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "a report covers at most 400" in done.stderr and len(done.stderr.splitlines()) == 1
    ok = subprocess.run([sys.executable, "-m", "botmeter.cli", "--config", str(config),
                         "report", "--from", "2026-01-01", "--to", "2027-01-01",
                         "--format", "json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("name", ["calls.db", "calls.db-wal", "botmeter.toml"])
def test_out_never_overwrites_the_database_or_the_config(site: Path, tmp_path: Path,
                                                         name: str) -> None:
    target = tmp_path / name
    before = target.read_bytes() if target.exists() else None
    done = report(site, "--period", "2026-11", "--format", "csv", "--out", str(target))
    assert done.returncode == 2 and "choose another --out" in done.stderr, done.stderr
    assert (target.read_bytes() if target.exists() else None) == before
    assert json.loads(report(site, "--period", "2026-11", "--format", "json").stdout)[
        "totals"]["offered"] == 8  # the calls are all still there
