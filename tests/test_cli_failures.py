"""Bad input from outside ends in ONE line on stderr, `botmeter: <what>: <where>: <reason>`, with
exit 2 (usage, configuration) or 1 (runtime), never a traceback: the real `botmeter` in a
subprocess for each kind of failure, click's runner for the full matrix of commands."""

from __future__ import annotations

import grp
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from botmeter.cli import main
from botmeter.storage.schema import SCHEMA_VERSION
from botmeter.storage.store import CallStore

from .conftest import LAB_CAPTURE
from .rating_support import PLANS_DIR, make_call

ROOT = Path(__file__).parent.parent
PLANS = '\n[plans]\ndir = "{dir}"\nactive = "combined"\n'
READERS = (["calls"], ["bill", "--period", "2026-11"], ["rerate", "--period", "2026-11"],
           ["plans", "compare", "--period", "2026-11", str(PLANS_DIR / "per-call.toml")])
WRITERS = (["replay", str(LAB_CAPTURE)],)


def botmeter(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user or systemd runs it."""
    return subprocess.run([sys.executable, "-m", "botmeter.cli", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=60)


def one_line(expected: int, code: int, stdout: str, stderr: str, *words: str) -> str:
    """The failure is exactly one `botmeter: ...` line on stderr naming all `words`."""
    assert "Traceback" not in stdout + stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("botmeter: "), line
    for word in words:
        assert word in line, (word, line)
    assert code == expected, (code, line)
    return line


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def config(write_config, tmp_path: Path) -> Path:
    plans = tmp_path / "plans"
    shutil.copytree(PLANS_DIR, plans)
    return write_config(extra=PLANS.format(dir=plans))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database of 200 calls, closed (the WAL checkpointed into the file)."""
    db = tmp_path_factory.mktemp("recorded") / "calls.db"
    store = CallStore(db)
    store.save([make_call(f"c{i}", bot=30.0 + i) for i in range(200)])
    store.close()
    return db


def _random(tmp_path: Path, recorded: Path) -> Path:
    path = tmp_path / "random.db"
    path.write_bytes(os.urandom(8192))
    return path


def _truncated(tmp_path: Path, recorded: Path) -> Path:
    path = tmp_path / "truncated.db"
    path.write_bytes(recorded.read_bytes()[:5000])
    return path


def _newer(tmp_path: Path, recorded: Path) -> Path:
    path = tmp_path / "newer.db"
    shutil.copy(recorded, path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    return path


BAD_DATABASES = {
    "random bytes": (_random, "not a botmeter database, or damaged"),
    "truncated": (_truncated, "damaged"),
    "newer schema": (_newer, f"schema version {SCHEMA_VERSION + 1} is newer"),
}


@pytest.mark.parametrize("kind", BAD_DATABASES)
@pytest.mark.parametrize("args", READERS + WRITERS, ids=lambda a: a[0])
def test_a_bad_database_is_one_line(config: Path, tmp_path: Path, recorded: Path, kind: str,
                                    args: list[str]) -> None:
    make, reason = BAD_DATABASES[kind]
    db = make(tmp_path, recorded)
    code, out, err = run_cli("--config", str(config), *args, "--db", str(db))
    one_line(1, code, out, err, "database error", str(db), reason)


@pytest.mark.parametrize("where", ["file-parent", "proc"])
@pytest.mark.parametrize("args", [["run"], *READERS, *WRITERS], ids=lambda a: a[0])
def test_a_store_path_that_cannot_be_created(config: Path, tmp_path: Path, where: str,
                                              args: list[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = blocker / "calls.db" if where == "file-parent" else Path("/proc/botmeter/calls.db")
    config.write_text(config.read_text().replace(str(tmp_path / "calls.db"), str(path)))
    code, out, err = run_cli("--config", str(config), *args)
    if args[0] in ("run", "replay"):  # they create the database: it cannot be
        one_line(1, code, out, err, "database error", str(path), "cannot create its folder",
                 str(blocker) if where == "file-parent" else "/proc/botmeter")
    else:  # the others only read: there is none
        one_line(2, code, out, err, "database error", str(path), "no database here")
    assert not path.exists()


def test_demo_with_a_bad_database_is_one_line(tmp_path: Path, recorded: Path) -> None:
    db = _random(tmp_path, recorded)
    code, out, err = run_cli("demo", "--calls", "1", "--db", str(db))
    one_line(1, code, out, err, "database error", str(db), "not a botmeter database")


@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
def test_commands_that_read_refuse_a_missing_database_and_create_none(
        config: Path, tmp_path: Path, args: list[str]) -> None:
    default = tmp_path / "calls.db"
    for extra in ([], ["--db", str(tmp_path / "elsewhere.db")]):
        code, out, err = run_cli("--config", str(config), *args, *extra)
        where = extra[1] if extra else str(default)
        one_line(2, code, out, err, "database error", where, "no database here")
    assert not default.exists() and not (tmp_path / "elsewhere.db").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["bill", "--period", "2026-1"], ["usage error", "bill", "--period", "'2026-1' is not a period"]),
    (["bill", "--period", "9999-12"], ["usage error", "bill", "--period", "out of range"]),
    (["rerate", "--period", "0001-01"], ["usage error", "rerate", "--period", "out of range"]),
    (["plans", "compare", "--period", "9999-12", str(PLANS_DIR / "per-call.toml")],
     ["usage error", "plans compare", "--period", "out of range"]),
    (["calls", "--until", "9999-12-31T23:59:59.9999"], ["usage error", "calls", "--until",
                                                         "out of range"]),
    (["calls", "--since", "0001-01-01T00:00:00+01:00"], ["usage error", "calls", "--since",
                                                          "out of range"]),
    (["calls", "--since", "last tuesday"], ["usage error", "calls", "--since", "ISO 8601"]),
    (["calls", "--colour"], ["usage error", "calls", "--colour"]),
    (["bill"], ["usage error", "bill", "--period"]),
    (["frobnicate"], ["usage error", "frobnicate"]),
])
def test_bad_arguments_are_one_line(config: Path, args: list[str], words: list[str]) -> None:
    one_line(2, *run_cli("--config", str(config), *args), *words)


def test_help_is_still_shown_in_full() -> None:
    for args in ([], ["plans"], ["calls", "--help"]):
        result = CliRunner().invoke(main, args)
        assert "Usage:" in result.output and "Options:" in result.output, args
        assert not result.output.startswith("botmeter:")


def test_periods_and_times_at_the_edges_of_the_range_work(config: Path) -> None:
    assert run_cli("--config", str(config), "replay", str(LAB_CAPTURE))[0] == 0
    for args in (["bill", "--period", "9999-11"],
                 ["calls", "--since", "0001-01-02", "--until", "9999-12-30T23:59:59.999"]):
        code, _, err = run_cli("--config", str(config), *args)
        assert code == 0, err
    # before the plan starts (2026-11-01) there is no statement: bill says so in one line
    code, out, err = run_cli("--config", str(config), "bill", "--period", "0001-02")
    assert (code, out) == (2, "")
    assert err.startswith("botmeter: plan error: ") and len(err.splitlines()) == 1, err
    assert "no version in force in 0001-02" in err


def test_plans_in_different_currencies_are_not_compared(config: Path, tmp_path: Path) -> None:
    usd = tmp_path / "usd.toml"
    usd.write_text((PLANS_DIR / "per-call.toml").read_text().replace('"CNY"', '"USD"')
                   .replace('id = "per-call"', 'id = "per-call-usd"'))
    run_cli("--config", str(config), "replay", str(LAB_CAPTURE))
    code, out, err = run_cli("--config", str(config), "plans", "compare", "--period", "2026-11",
                             str(PLANS_DIR / "per-minute.toml"), str(usd))
    one_line(2, code, out, err, "plan error", str(usd), "plan.currency", "USD", "CNY")


@pytest.mark.parametrize("content", [b"", b"hello, this is not AMI\n",
                                     b"Response: Success\r\nMessage: pong\r\n\r\n"])
def test_replay_of_a_file_without_ami_events(config: Path, tmp_path: Path, content: bytes) -> None:
    capture = tmp_path / "capture.ami"
    capture.write_bytes(content)
    code, out, err = run_cli("--config", str(config), "replay", str(capture))
    one_line(1, code, out, err, "replay error", str(capture), "no AMI event")


def test_internal_errors_are_one_line_with_the_traceback_only_at_debug(tmp_path: Path,
                                                                        recorded: Path) -> None:
    script = ("import sys; import botmeter.storage.store as s\n"
              "def boom(*a, **k): raise RuntimeError('boom\\nsecond line')\n"
              "s.CallStore.calls = s.CallStore.listing = boom\n"
              "from botmeter.cli import main; main()\n")
    plain = subprocess.run([sys.executable, "-c", script, "calls", "--db", str(recorded)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    line = one_line(1, plain.returncode, plain.stdout, plain.stderr, "internal error",
                    "RuntimeError", "boom second line", "--log-level debug")
    assert line.startswith("botmeter: internal error: RuntimeError: boom")
    debug = subprocess.run([sys.executable, "-c", script, "--log-level", "debug", "calls",
                            "--db", str(recorded)], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert debug.returncode == 1 and "internal error" in debug.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1] == line


# The real command, in a subprocess: one case of each kind

@pytest.fixture
def real(tmp_path: Path, config: Path, recorded: Path) -> dict[str, Path]:
    """Files for the subprocess cases."""
    usd = tmp_path / "usd.toml"
    usd.write_text((PLANS_DIR / "per-call.toml").read_text().replace('"CNY"', '"USD"')
                   .replace('id = "per-call"', 'id = "per-call-usd"'))
    junk = tmp_path / "junk.ami"
    junk.write_bytes(b"\x00\x01 not a capture")
    secret = tmp_path / "latin1.secret"
    secret.write_bytes("s\xe9cret".encode("latin-1"))
    secret.chmod(0o600)
    secret_config = tmp_path / "secret.toml"
    secret_config.write_text(config.read_text().replace('secret = "botmeter-sim"',
                                                        f'secret_file = "{secret}"'))
    bad_plans = tmp_path / "bad-plans"
    shutil.copytree(PLANS_DIR, bad_plans)
    per_minute = bad_plans / "per-minute.toml"
    per_minute.write_text(per_minute.read_text().replace('price = "0.12"', 'price = "1e999999999"'))
    bad_plan_config = tmp_path / "bad-plan.toml"
    bad_plan_config.write_text(config.read_text().replace(str(tmp_path / "plans"), str(bad_plans)))
    proc_config = tmp_path / "proc.toml"
    proc_config.write_text(config.read_text().replace(str(tmp_path / "calls.db"),
                                                      "/proc/botmeter/calls.db"))
    return {"config": config, "usd": usd, "junk": junk, "secret_config": secret_config,
            "secret": secret, "bad_plan_config": bad_plan_config, "per_minute": per_minute,
            "proc_config": proc_config, "recorded": recorded, "random": _random(tmp_path, recorded),
            "newer": _newer(tmp_path, recorded), "missing": tmp_path / "missing.db"}


SUBPROCESS_CASES = {
    "corrupt database": (["--config", "{config}", "bill", "--period", "2026-11", "--db", "{random}"],
                         1, ["database error", "{random}", "not a botmeter database"]),
    "newer schema": (["--config", "{config}", "replay", str(LAB_CAPTURE), "--db", "{newer}"], 1,
                     ["database error", "{newer}", "newer than this botmeter"]),
    "store path in /proc, run": (["--config", "{proc_config}", "run"], 1,
                                 ["database error", "/proc/botmeter/calls.db", "cannot create"]),
    "missing database": (["calls", "--db", "{missing}"], 2,
                         ["database error", "{missing}", "no database here"]),
    "secret not UTF-8": (["--config", "{secret_config}", "run"], 2,
                         ["configuration error", "{secret}", "not UTF-8"]),
    "period": (["--config", "{config}", "bill", "--period", "2026-1"], 2,
               ["usage error", "bill", "--period", "not a period"]),
    "time": (["--config", "{config}", "calls", "--db", "{recorded}", "--until",
              "9999-12-31T23:59:59.9999"], 2, ["usage error", "calls", "--until", "out of range"]),
    "currencies": (["--config", "{config}", "plans", "compare", "--period", "2026-11", "--db",
                    "{recorded}", "{usd}"], 2, ["plan error", "{usd}", "plan.currency"]),
    "no AMI event": (["--config", "{config}", "replay", "{junk}"], 1,
                     ["replay error", "{junk}", "no AMI event"]),
    "absurd plan amount": (["--config", "{bad_plan_config}", "bill", "--period", "2026-11"], 2,
                           ["plan error", "{per_minute}", "charge[1].price", "too large"]),
}


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_the_real_command_says_one_line(real: dict[str, Path], case: str) -> None:
    args, code, words = SUBPROCESS_CASES[case]
    fill = {name: str(path) for name, path in real.items()}
    started = time.monotonic()
    done = botmeter(*(a.format(**fill) for a in args))
    one_line(code, done.returncode, done.stdout, done.stderr, *(w.format(**fill) for w in words))
    assert time.monotonic() - started < 30


# Database files: private whatever the umask, or readable by the configured group

@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(db: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for suffix in ("", "-wal", "-shm"):
        info = os.stat(f"{db}{suffix}")
        found[suffix or "db"] = (stat.S_IMODE(info.st_mode), info.st_gid)
    return found


@pytest.mark.usefixtures("umask_022")
def test_database_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    db = tmp_path / "new" / "calls.db"
    store = CallStore(db)
    store.save([make_call("c1", bot=12.0)])
    try:
        assert {name: mode for name, (mode, _) in _modes(db).items()} == {
            "db": 0o600, "-wal": 0o600, "-shm": 0o600}
    finally:
        store.close()


@pytest.mark.usefixtures("umask_022")
def test_database_of_a_configured_group_is_0640(tmp_path: Path, write_config) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    config = write_config(extra="")
    config.write_text(config.read_text().replace("[store]\n", f'[store]\ngroup = "{group}"\n'))
    code, _, err = run_cli("--config", str(config), "replay", str(LAB_CAPTURE))
    assert code == 0, err
    db = tmp_path / "calls.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o640
    store = CallStore(db)  # a later writer: -wal and -shm get the database's mode and group
    store.save([make_call("c1", bot=12.0)])
    try:
        assert _modes(db) == {name: (0o640, os.getgid()) for name in ("db", "-wal", "-shm")}
    finally:
        store.close()


def test_an_unknown_store_group_is_a_configuration_error(write_config) -> None:
    config = write_config()
    config.write_text(config.read_text().replace("[store]\n", '[store]\ngroup = "no-such-grp"\n'))
    one_line(2, *run_cli("--config", str(config), "calls"), "configuration error",
             "store.group", "no group 'no-such-grp'")


def test_plan_warnings_reach_the_log(write_config, tmp_path: Path) -> None:
    """Semantics 6 from the command line: calls offered before the plan starts are stored unrated
    with a warning each, and a once fee no period can bill is logged when the plans load."""
    plans = tmp_path / "plans"
    plans.mkdir()
    text = (PLANS_DIR / "per-call.toml").read_text(encoding="utf-8")
    (plans / "per-call.toml").write_text(
        text.replace('effective_from = "2026-01-01"', 'effective_from = "2099-01-01"')
        + '\n[[fee]]\nname = "Set-up"\namount = "500.00"\nevery = "once"\non = "2098-12-01"\n',
        encoding="utf-8")
    config = write_config(extra=PLANS.format(dir=plans).replace("combined", "per-call"))
    done = botmeter("--config", str(config), "--log-json", "replay", str(LAB_CAPTURE))
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    fee_warnings = [e["detail"] for e in events if e["event"] == "plan fee never billed"]
    assert fee_warnings == [
        f"{plans / 'per-call.toml'}: fee[1]: once fee 'Set-up' due 2098-12-01 is never billed: "
        "no version of plan 'per-call' is in force on that day (the plan starts on 2099-01-01)"]
    not_rated = {e["call_id"] for e in events if e["event"] == "call not rated"}
    assert len(not_rated) == 13  # every lab call, each named once
    listed = json.loads(botmeter("--config", str(config), "calls", "--format", "json").stdout)
    assert len(listed) == 13 and all(c["cost"] is None for c in listed)


def test_replay_keeps_calls_in_progress_under_the_configured_cap(write_config, tmp_path: Path,
                                                                 ) -> None:
    """`[calls] max_in_progress` bounds a replay too, and its summary counts what it closed."""
    capture = tmp_path / "flood.ami"
    capture.write_bytes(b"Asterisk Call Manager/6.0.0\r\n" + b"".join(
        (f"Event: Newchannel\r\nChannel: Local/flood-{i:04x};1\r\nContext: elsewhere\r\n"
         f"Exten: s\r\nUniqueid: 77{i}.1\r\nLinkedid: 77{i}.1\r\n\r\n").encode()
        for i in range(50)))
    config = write_config(extra="").read_text(encoding="utf-8").replace(
        '[calls]\n', '[calls]\nmax_in_progress = 10\n')
    path = tmp_path / "capped.toml"
    path.write_text(config, encoding="utf-8")
    code, out, _ = run_cli("--config", str(path), "replay", str(capture))
    stats = dict(pair.split("=") for pair in out.split())
    assert code == 0
    assert (stats["events"], stats["calls_unfinished"], stats["calls_evicted"]) == ("50", "10", "40")


def test_another_programs_database_is_never_turned_into_botmeters(config: Path,
                                                                   tmp_path: Path) -> None:
    """A SQLite file without botmeter's layout is refused by every command and left as it is;
    an empty file is refused by the commands that only read."""
    foreign = tmp_path / "invoices.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount TEXT)")
    conn.close()
    empty = tmp_path / "empty.db"
    empty.touch()
    for args in (*READERS, *WRITERS):
        code, _, err = run_cli("--config", str(config), *args, "--db", str(foreign))
        assert code == 1 and "not a botmeter database (it holds invoices)" in err, (args, err)
    for args in READERS:
        code, _, err = run_cli("--config", str(config), *args, "--db", str(empty))
        assert code == 2 and "an empty file, not a botmeter database" in err, (args, err)
    with sqlite3.connect(foreign) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("invoices",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()
    assert empty.stat().st_size == 0
