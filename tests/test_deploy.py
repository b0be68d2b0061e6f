"""The deploy files: deploy/install.sh's plan (--dry-run changes nothing), and the systemd
units as systemd-analyze sees them (security rating, verification) where it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from configparser import ConfigParser
from pathlib import Path

import pytest

from botmeter.service import STOP_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "deploy" / "install.sh"
UNITS = ROOT / "deploy" / "systemd"
#: what an install creates: a dry run must leave each as it was
TOUCHED = [Path("/opt/botmeter"), Path("/etc/botmeter"), Path("/usr/share/doc/botmeter"),
           *(Path("/etc/systemd/system") / unit.name for unit in UNITS.iterdir())]
MAX_EXPOSURE = 2.0


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def _state() -> tuple[object, ...]:
    user = subprocess.run(["getent", "passwd", "botmeter"], capture_output=True, text=True)
    return (user.stdout, *(p.exists() for p in TOUCHED))


def _step(lines: list[str], done: str, skipped: str) -> None:
    """The plan runs `done` (a command, exactly), or says in a note why it need not."""
    assert f"+ {done}" in lines or any(line.startswith(f"# {skipped}") for line in lines), (
        done, lines)


def test_a_dry_run_prints_the_whole_install_and_changes_nothing(tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("the-secret\n")
    before = _state()
    done = _install("--dry-run", "--ami-secret", str(secret))
    assert done.returncode == 0, done.stderr
    assert _state() == before
    lines = done.stdout.splitlines()
    assert lines[0].startswith("# dry run: nothing is changed")
    assert all(line.startswith(("+ ", "# ")) for line in lines), lines
    _step(lines, "useradd --system --user-group --home-dir /var/lib/botmeter --no-create-home "
                 "--shell /usr/sbin/nologin --comment botmeter\\ voice\\ bot\\ usage\\ meter "
                 "botmeter", "user botmeter exists")
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
    _step(lines, f"{python} -m venv /opt/botmeter/venv",
          "virtual environment /opt/botmeter/venv exists")
    assert (f"+ /opt/botmeter/venv/bin/pip install --quiet --disable-pip-version-check "
            f"--upgrade {ROOT}") in lines
    assert "+ install -d -m 0750 -o root -g botmeter /etc/botmeter /etc/botmeter/plans" in lines
    _step(lines, f"install -m 0640 -o root -g botmeter {ROOT}/config/botmeter.toml "
                 "/etc/botmeter/botmeter.toml", "/etc/botmeter/botmeter.toml exists: kept")
    for plan in sorted((ROOT / "config" / "plans").glob("*.toml")):
        _step(lines, f"install -m 0640 -o root -g botmeter {plan} /etc/botmeter/plans/{plan.name}",
              f"/etc/botmeter/plans/{plan.name} exists: kept")
    assert f"+ install -m 0600 -o root -g root {secret} /etc/botmeter/ami.secret" in lines
    for unit in sorted(UNITS.iterdir()):
        assert (f"+ install -m 0644 -o root -g root {unit} "
                f"/etc/systemd/system/{unit.name}") in lines
    tail = [line for line in lines if line.startswith("+ systemctl")]
    assert tail[:2] == ["+ systemctl daemon-reload",
                        "+ systemctl enable --now botmeter.service botmeter-report.timer"]


def test_without_a_secret_the_plan_installs_but_does_not_start() -> None:
    if Path("/etc/botmeter/ami.secret").exists():
        pytest.skip("this machine has an AMI secret installed")
    done = _install("--dry-run")
    assert done.returncode == 0, done.stderr
    assert "enable --now" not in "".join(line for line in done.stdout.splitlines()
                                         if line.startswith("+"))
    assert "# no /etc/botmeter/ami.secret yet: botmeter is not started." in done.stdout


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--bogus"], 2, "install.sh: unknown option: --bogus (see --help)"),
    (["--source"], 2, "install.sh: --source needs a directory"),
    (["--dry-run", "--source", "/"], 1,
     "install.sh: /: not a botmeter source tree (no pyproject.toml, agent/botmeter)"),
    (["--dry-run", "--python", "no-such-python3"], 1,
     "install.sh: no-such-python3: not found (botmeter needs Python 3.11+)"),
    (["--dry-run", "--ami-secret", "/nonexistent"], 1,
     "install.sh: /nonexistent: no such file, or empty (--ami-secret FILE holds the AMI secret)"),
])
def test_bad_arguments_stop_it_with_one_line(args: list[str], code: int, message: str) -> None:
    done = _install(*args)
    assert (done.returncode, done.stderr, done.stdout) == (code, message + "\n", "")


def test_a_python_in_a_home_directory_is_refused(tmp_path: Path) -> None:
    """pyenv's Python in /root, say: the service could not run it (ProtectHome=)."""
    python = tmp_path / "python3"
    python.write_text('#!/bin/sh\ncase "$*" in *base_prefix*) echo /root/.pyenv/versions/3.12.1 ;;'
                      ' esac\nexit 0\n')
    python.chmod(0o755)
    done = _install("--dry-run", "--python", str(python))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"install.sh: {python}: installed in /root/.pyenv/versions/3.12.1, a "
                           "home directory, which the service cannot see (ProtectHome=): give "
                           "--python /usr/bin/python3 or another system Python\n")


def test_help_is_the_header() -> None:
    done = _install("--help")
    assert done.returncode == 0 and "--dry-run prints every command" in done.stdout


# -- the units -------------------------------------------------------------------------------

def _unit(name: str) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_the_service_is_notify_with_a_watchdog_and_room_to_stop() -> None:
    service = _unit("botmeter.service")["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"]) >= 10
    assert int(service["TimeoutStopSec"]) > STOP_TIMEOUT  # the agent's own stop comes first
    config = (ROOT / "config" / "botmeter.toml").read_text(encoding="utf-8")
    credential = service["LoadCredential"].split(":")[0]
    assert f'secret_file = "/etc/botmeter/{credential}"' in config
    assert "--log-json" not in service["ExecStart"]  # JSON for the journal by itself, or by [log]


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed")
    return path


@pytest.mark.parametrize("unit", ["botmeter.service", "botmeter-report.service"])
def test_the_units_are_rated_safe_by_systemd_analyze(unit: str) -> None:
    done = subprocess.run([_analyze(), "security", "--offline=true", "--no-pager",
                           str(UNITS / unit)], capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


def test_the_units_verify_cleanly(tmp_path: Path) -> None:
    """`systemd-analyze verify` on copies whose botmeter is a program that exists here (it
    checks that ExecStart's program does): no warning about any line."""
    for unit in UNITS.iterdir():
        text = unit.read_text(encoding="utf-8").replace("/opt/botmeter/venv/bin/botmeter",
                                                        "/bin/true")
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    done = subprocess.run([_analyze(), "verify", "--man=no",
                           *sorted(str(p) for p in tmp_path.iterdir())],
                          capture_output=True, text=True, timeout=60)
    about_units = [line for line in (done.stdout + done.stderr).splitlines()
                   if str(tmp_path) in line or "botmeter" in line]
    assert done.returncode == 0 and about_units == [], done.stdout + done.stderr
