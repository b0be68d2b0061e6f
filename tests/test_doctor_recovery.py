"""`botmeter check-config` / `doctor` say which recovery mode the site is in, from real files."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from botmeter.config import load_config
from botmeter.doctor.recovery import check_recovery

from .conftest import FIXTURES
from .recovery_support import lab_master_db


def _config(write_config, recovery: str) -> object:
    return load_config(str(write_config(extra=f"\n[recovery]\n{recovery}\n")))


def test_cel_mode_is_ok_and_says_how_fresh_the_file_is(tmp_path: Path, write_config) -> None:
    db = lab_master_db(tmp_path)
    found = check_recovery(_config(write_config, f'cel_db = "{db}"'), now=1795781734.0 + 90)
    assert found.status == "OK" and "CEL mode" in found.detail and str(db) in found.detail
    assert "newest row" in found.detail


def test_cdr_mode_and_ami_only_are_warnings_with_the_fix(tmp_path: Path, write_config) -> None:
    cdr = tmp_path / "Master.csv"
    cdr.write_bytes((FIXTURES / "lab-cel.Master.csv").read_bytes())
    found = check_recovery(_config(write_config, f'cdr_csv = "{cdr}"'))
    assert found.status == "WARN" and "CDR mode" in found.detail and "cel_db" in found.fix
    found = check_recovery(_config(write_config, ""))
    assert found.status == "WARN" and "AMI only" in found.detail and "lost" in found.detail


@pytest.mark.parametrize("problem", ["missing", "not a CEL table", "unreadable"])
def test_a_cel_file_it_cannot_read_fails_naming_it(tmp_path: Path, write_config,
                                                    problem: str) -> None:
    path = tmp_path / "master.db"
    if problem == "not a CEL table":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE cel (eventtype, eventtime)")
        conn.close()
    elif problem == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads every file")
        lab_master_db(tmp_path).chmod(0)
    found = check_recovery(_config(write_config, f'cel_db = "{path}"'))
    assert found.status == "FAIL" and str(path) in found.detail, found
    assert "asterisk group" in found.fix
