"""`botmeter backfill`, the real command in a subprocess: the calls Asterisk's CEL (or CDR) file
holds and the database lacks are stored, once; calls stored from AMI are left as they are."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .recovery_support import LAB_CEL_AMI, LAB_CEL_CSV, LAB_MASTER_CSV, lab_master_db
from .test_cli_failures import one_line
from .test_startup_imports import HEAVY_FOR_HELP, imported_by, loaded

ROOT = Path(__file__).resolve().parents[1]
WINDOW = ("--from", "2026-11-27T12:00:00Z", "--to", "2026-11-27T13:00:00")
PLANS_DIR = ROOT / "config" / "plans"


def botmeter(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "botmeter.cli", "--config", str(config), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def counts(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert done.returncode == 0, done.stderr
    return dict(pair.split("=", 1) for pair in done.stdout.split())


def stored(db: Path) -> dict[str, tuple[str, str | None]]:
    """call_id -> (source, cost) of every stored call."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT call_id, source, cost FROM calls").fetchall()
    conn.close()
    return {call_id: (source, cost) for call_id, source, cost in rows}


def test_a_backfill_stores_the_calls_once(write_config, tmp_path: Path) -> None:
    config = write_config()
    first = counts(botmeter(config, "backfill", *WINDOW, "--cel", str(LAB_CEL_CSV)))
    assert first == {"source": "cel", "calls_found": "18", "calls_stored": "18",
                     "calls_present": "0", "calls_rejected": "0", "calls_unfinished": "0",
                     "bad_rows": "0", "periods_rerated": "0"}
    again = counts(botmeter(config, "backfill", *WINDOW, "--cel", str(LAB_CEL_CSV)))
    assert (again["calls_found"], again["calls_stored"], again["calls_present"]) == (
        "18", "0", "18")
    calls = stored(tmp_path / "calls.db")
    assert len(calls) == 18 and {source for source, _ in calls.values()} == {"cel"}


def test_calls_stored_from_ami_are_left_as_they_are(write_config, tmp_path: Path) -> None:
    config = write_config()
    replayed = botmeter(config, "replay", str(LAB_CEL_AMI))
    assert replayed.returncode == 0 and "calls_recorded=18" in replayed.stdout, replayed.stderr
    db = tmp_path / "calls.db"
    with sqlite3.connect(db) as conn:  # three calls the agent missed
        missed = [r[0] for r in conn.execute(
            "SELECT call_id FROM calls ORDER BY offered_at LIMIT 3 OFFSET 4")]
        conn.executemany("DELETE FROM calls WHERE call_id = ?", [(c,) for c in missed])
    conn.close()
    done = counts(botmeter(config, "backfill", *WINDOW, "--cel", str(LAB_CEL_CSV)))
    assert (done["calls_found"], done["calls_stored"], done["calls_present"]) == ("18", "3", "15")
    calls = stored(db)
    assert len(calls) == 18
    assert {c for c, (source, _) in calls.items() if source == "cel"} == set(missed)


def test_the_configured_cel_file_and_a_plan_rate_what_is_stored(write_config,
                                                                tmp_path: Path) -> None:
    master = lab_master_db(tmp_path)
    shutil.copytree(PLANS_DIR, tmp_path / "plans")
    config = write_config(extra=f'\n[plans]\ndir = "plans"\nactive = "combined"\n'
                                f'\n[recovery]\ncel_db = "{master.name}"\n')
    done = counts(botmeter(config, "backfill", *WINDOW))
    assert (done["source"], done["calls_stored"], done["periods_rerated"]) == ("cel", "18", "1")
    assert all(cost is not None for _, cost in stored(tmp_path / "calls.db").values())
    listed = botmeter(config, "calls", "--format", "json")
    assert {r["plan_id"] for r in json.loads(listed.stdout)} == {"combined"}


def test_without_cel_the_cdr_file_fills_in(write_config, tmp_path: Path) -> None:
    config = write_config(extra=f'\n[recovery]\ncdr_csv = "{LAB_MASTER_CSV}"\n')
    done = counts(botmeter(config, "backfill", *WINDOW))
    assert (done["source"], done["calls_stored"]) == ("cdr", "18")
    assert {source for source, _ in stored(tmp_path / "calls.db").values()} == {"cdr"}
    assert counts(botmeter(config, "backfill", *WINDOW, "--cel", str(LAB_CEL_CSV)))[
        "calls_stored"] == "0"  # the same calls: already there


def test_a_window_stores_only_the_calls_offered_in_it(write_config, tmp_path: Path) -> None:
    config = write_config()
    done = counts(botmeter(config, "backfill", "--from", "2026-11-27T12:15:40Z", "--to",
                           "2026-11-27T12:15:43Z", "--cel", str(LAB_CEL_CSV)))
    assert 0 < int(done["calls_stored"]) < 18
    listed = json.loads(botmeter(config, "calls", "--format", "json").stdout)
    assert all("2026-11-27T12:15:40" <= r["offered_at"] < "2026-11-27T12:15:43" for r in listed)
    assert len(listed) == int(done["calls_stored"])


@pytest.mark.parametrize(("args", "words"), [
    (("--from", "2026-11-28", "--to", "2026-11-27", "--cel", "x.db"), ["--from must be before"]),
    (("--from", "yesterday", "--to", "2026-11-27"), ["--from", "ISO 8601"]),
    ((*WINDOW, "--cel", "a.db", "--cdr", "b.csv"), ["--cel or --cdr, not both"]),
    (WINDOW, ["no CEL or CDR file", "[recovery] cel_db"]),
    ((*WINDOW, "--cel", "/nonexistent/master.db"), ["/nonexistent/master.db", "no such file"]),
    ((*WINDOW, "--cel", str(LAB_MASTER_CSV)), [str(LAB_MASTER_CSV), "no header line"]),
    ((*WINDOW, "--cdr", str(LAB_CEL_CSV)), [str(LAB_CEL_CSV), "no column 'start'"]),
])
def test_bad_arguments_and_files_end_in_one_line(write_config, args: tuple[str, ...],
                                                 words: list[str]) -> None:
    done = botmeter(write_config(), "backfill", *args)
    one_line(2, done.returncode, done.stdout, done.stderr, *words)


def test_help_lists_backfill_and_stays_light() -> None:
    output, modules = imported_by("from botmeter.cli import main", "main(['--help'])")
    assert "backfill" in output
    output, modules = imported_by("from botmeter.cli import main", "main(['backfill', '--help'])")
    assert "--cel" in output and loaded(modules, (*HEAVY_FOR_HELP, "botmeter.recovery")) == []


def test_recovery_paths_resolve_like_the_store_path(tmp_path: Path) -> None:
    from botmeter.config import ConfigError, parse_config, recovery_sources

    base = {"agent": {"id": "a"}, "ami": {"username": "u", "secret": "s"},
            "calls": {"inbound_contexts": ["from-pstn"]}, "bot": {"contexts": ["voicebot"]}}
    where = str(tmp_path / "botmeter.toml")
    assert recovery_sources(parse_config(base, where)) == (None, None)
    config = parse_config({**base, "recovery": {"cel_db": "asterisk/master.db",
                                                "cdr_csv": "/var/log/asterisk/cdr-csv/Master.csv",
                                                "cdr_db": "cdr.db"}}, where)
    assert recovery_sources(config) == (tmp_path / "asterisk/master.db", tmp_path / "cdr.db")
    with pytest.raises(ConfigError, match="recovery.cel: unknown key"):
        parse_config({**base, "recovery": {"cel": "x"}}, where)
