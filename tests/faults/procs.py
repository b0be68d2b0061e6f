"""The processes of a fault run, each a real subprocess on loopback: `botmeter sim` (the PBX),
`botmeter run` (the agent) and `botmeter-receiver` (the vendor), started, signalled, killed
and started again, their output appended to a log file each."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import botmeter

from .site import Site

#: the code the harness runs is the code its subprocesses run
AGENT_CODE = str(Path(botmeter.__file__).resolve().parents[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (AGENT_CODE, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


#: runs a botmeter command with the host's clock set back (the uplink's run)
SHIFTED = str(Path(__file__).with_name("shifted.py"))


def botmeter_argv(*args: str, clock_behind: float = 0.0) -> list[str]:
    """A botmeter command; with `clock_behind`, on a clock that many seconds behind."""
    if clock_behind:
        return [sys.executable, SHIFTED, f"{clock_behind:.6f}", *args]
    return [sys.executable, "-m", "botmeter.cli", *args]


class Process:
    """One subprocess, as many times as it is started; its output goes to `log`."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.cwd = cwd
        self.starts = 0
        self.kills = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- {self.name} start {self.starts} ---\n".encode())
            out.flush()
            self._proc = subprocess.Popen(self.argv, cwd=self.cwd, env=child_env(), stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.running:
            assert self._proc is not None
            self._proc.kill()
            self._proc.wait()
            self.kills += 1

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for the exit (SIGKILL after `timeout`); its exit code (None: it
        had to be killed, or never ran)."""
        if self._proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self._proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def agent_argv(site: Site) -> list[str]:
    return botmeter_argv("--config", str(site.config), "--log-json", "run",
                         clock_behind=site.clock_behind)


def sim_argv(site: Site, *, port: int, calls: int, rate: float, down: float) -> list[str]:
    """One round of `calls`, from the agent's first login on; then the PBX stays up (its next
    round is a day away)."""
    return botmeter_argv(
        "sim", "--listen", f"127.0.0.1:{port}", "--secret-file", str(site.ami_secret),
        "--calls", str(calls), "--rate", f"{rate:g}",
        "--rounds", "0", "--every", "86400", "--wait-login", "--agi-port", str(site.agi_port),
        "--cel-db", str(site.cel), "--truth", str(site.truth), "--down", f"{down:g}",
        clock_behind=site.clock_behind)


def receiver_argv(site: Site) -> list[str]:
    """The vendor's receiver, on the real clock: it takes the site's signatures however far
    behind the site's clock is (and a little more)."""
    assert site.uplink_port is not None
    return [sys.executable, "-m", "botmeter.uplink.receiver", "--listen",
            f"127.0.0.1:{site.uplink_port}", "--db", str(site.receiver_db),
            "--token-file", str(site.token), "--secret-file", str(site.key),
            "--max-skew", f"{site.clock_behind + 300:.0f}"]


async def cli_json(site: Site, *args: str) -> str:
    """A botmeter command's stdout (it must succeed)."""
    done = await asyncio.to_thread(
        subprocess.run, botmeter_argv("--config", str(site.config), *args), cwd=site.root,
        env=child_env(), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"botmeter {' '.join(args)}: exit {done.returncode}: {done.stderr}")
    return done.stdout


