"""Start-up stays quick: `botmeter --help` and `botmeter-agi` import only what they need.

A behavioural guard, not a timing: each runs in a fresh interpreter, which then lists the heavy
modules it imported. tests/bench/bench_startup.py measures the times.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: what `botmeter --help` must not import: validation, storage, logging, the event loop, ...
HEAVY_FOR_HELP = (
    "pydantic", "sqlite_utils", "sqlite3", "asyncio", "uvloop", "rich", "structlog",
    "panoramisk", "httpx", "botmeter.config", "botmeter.storage", "botmeter.rating",
    "botmeter.metering", "botmeter.service", "botmeter.pbx", "botmeter.reports",
    "botmeter.runtime",
)
#: what `botmeter-agi` must not import: it runs once per bot signal on the PBX
HEAVY_FOR_AGI = (*HEAVY_FOR_HELP, "click", "botmeter.cli", "botmeter.tracking.tracker")

PROBE = """
import json, sys
sys.stderr = sys.stdout
{setup}
try:
    {call}
except SystemExit:
    pass
sys.stdout.flush()
print("\\n" + json.dumps(sorted(sys.modules)))
"""


def imported_by(setup: str, call: str, stdin: bytes = b"") -> tuple[str, set[str]]:
    """Run `setup` then `call` in a fresh interpreter: (its output, stdout and stderr, and the
    modules it imported)."""
    proc = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup, call=call)],
                          input=stdin, capture_output=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    output, _, modules = proc.stdout.decode().rpartition("\n[")
    return output, set(json.loads("[" + modules))


def loaded(modules: set[str], heavy: tuple[str, ...]) -> list[str]:
    """The heavy packages among `modules` (a package counts with any of its submodules)."""
    return sorted(name for name in heavy
                  if any(m == name or m.startswith(name + ".") for m in modules))


@pytest.mark.parametrize("args", [["--help"], ["-h"], []])
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    output, modules = imported_by("from botmeter.cli import main", f"main({args!r})")
    assert "Usage:" in output and "calls" in output and "BOTMETER_CONFIG" in output
    assert "botmeter.cli" in modules
    assert loaded(modules, HEAVY_FOR_HELP) == []


@pytest.mark.parametrize("args", [
    ["calls", "--help"], ["--log-json", "run", "--help"], ["plans", "compare", "--help"],
    ["--log-level", "debug", "replay", "--help"],
])
def test_command_help_imports_nothing_heavy(args: list[str]) -> None:
    """The group's set-up runs before a command's --help: it must stay light (logging is set up
    only when a command reads its config)."""
    output, modules = imported_by("from botmeter.cli import main", f"main({args!r})")
    assert "Usage:" in output
    assert loaded(modules, (*HEAVY_FOR_HELP, "logging")) == []


def test_agi_script_imports_nothing_heavy() -> None:
    env = (b"agi_request: botmeter-agi\nagi_channel: PJSIP/bot-00000012\nagi_arg_1: usage\n\n"
           b"200 result=0\n200 result=1\n")
    output, modules = imported_by(
        "from botmeter.bot.agi_script import main",
        "main(['usage', 'module=asr', 'quantity=12', 'unit=seconds'])", stdin=env)
    assert "EXEC UserEvent" in output and "BOTMETER_STATUS ok" in output
    assert loaded(modules, HEAVY_FOR_AGI) == []


def test_logging_as_set_up() -> None:
    """Importing botmeter.logs costs nothing; setup_logging then sets structlog and stdlib up."""
    output, modules = imported_by("""
import botmeter.logs
print("imported:", sorted({"structlog", "logging"} & set(sys.modules)))
botmeter.logs.setup_logging("warning", json=True)
import structlog
log = structlog.get_logger("botmeter.test")
log.info("not shown")
log.warning("shown", n=1)
import logging
logging.getLogger("panoramisk").warning("stdlib shown")
logging.getLogger("panoramisk").info("stdlib not shown")
botmeter.logs.setup_logging("debug")
log.debug("debug shown")
""", "pass")
    first, *lines = output.strip().splitlines()
    assert first == "imported: []"
    assert len(lines) == 3, lines
    assert json.loads(lines[0]) | {"timestamp": ""} == {
        "event": "shown", "n": 1, "level": "warning", "logger": "botmeter.test", "timestamp": ""}
    assert json.loads(lines[1]) | {"timestamp": ""} == {  # stdlib's lines: rendered alike
        "event": "stdlib shown", "level": "warning", "logger": "panoramisk", "timestamp": ""}
    assert "debug shown" in lines[2] and "[botmeter.test]" in lines[2]


def test_guard_sees_heavy_imports() -> None:
    """The probe itself works: a command that loads a config does import pydantic."""
    _, modules = imported_by("from botmeter.config import ENV_VAR", "pass")
    assert {"botmeter.config", "pydantic"} <= set(loaded(modules, HEAVY_FOR_HELP))


def test_the_package_is_botmeter_and_nothing_called_agent(tmp_path) -> None:
    """The repository's agent/ folder installs as `botmeter`; no top-level `agent` is importable."""
    def imports(name: str) -> bool:
        return subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path,
                              capture_output=True).returncode == 0

    assert imports("botmeter.cli") and not imports("agent")
