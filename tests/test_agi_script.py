"""The `botmeter-agi` script, run as Asterisk runs it: a subprocess talking AGI on stdin/stdout."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from botmeter.bot import agi_script
from botmeter.bot.agi_script import parse_args
from botmeter.bot.protocol import agi_quote, app_escape, user_event_data
from botmeter.bot.session import parse_request
from botmeter.sim.agi import split_app_args, split_command
from botmeter.tracking.signals import SignalError

ROOT = Path(__file__).resolve().parents[1]
ENV = (b"agi_request: botmeter-agi\nagi_channel: PJSIP/bot-00000012\nagi_language: en\n"
       b"agi_type: PJSIP\nagi_uniqueid: 1795706738.7\nagi_version: 20.5.0\n"
       b"agi_callerid: 0612345678\nagi_calleridname: Alice\nagi_context: voicebot\n"
       b"agi_extension: s\nagi_priority: 3\nagi_enhanced: 0.0\nagi_accountcode: \n"
       b"agi_threadid: 140213411874560\nagi_arg_1: usage\n\n")

Responder = Callable[[str], bytes | None]


def ok(command: str) -> bytes:
    return b"200 result=0\n" if command.startswith("EXEC") else b"200 result=1\n"


@dataclass
class Run:
    commands: list[str]
    stderr: str
    returncode: int
    seconds: float


def _catches_sighup(pid: int) -> bool:
    """Whether the process has a handler for SIGHUP (Linux: SigCgt in /proc/<pid>/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE)
    return caught is not None and bool(int(caught.group(1), 16) & (1 << (signal.SIGHUP - 1)))


def run_agi(args: list[str], respond: Responder | None = ok, env: bytes = ENV,
            limit: float = 5.0, close_after_reply: bool = False,
            hangup_in_env: bool = False) -> Run:
    """Run the script with `env` on stdin, answering each command with `respond` (None: close
    stdin; close_after_reply: close after the first answer; hangup_in_env: send SIGHUP, as
    Asterisk does on hangup, while pyst2 reads the environment). Returns what it sent, its
    stderr, exit code and wall time."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "botmeter.bot.agi_script", *args], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    commands: list[str] = []
    pending = b""
    try:
        if hangup_in_env:  # pyst2's SIGHUP handler is installed once it reads the environment
            proc.stdin.write(env[:-1])
            proc.stdin.flush()
            while not _catches_sighup(proc.pid) and time.monotonic() - start < limit:
                time.sleep(0.005)
            proc.send_signal(signal.SIGHUP)
            env = env[-1:]
        proc.stdin.write(env)
        proc.stdin.flush()
        if respond is None:
            proc.stdin.close()
        fd = proc.stdout.fileno()
        while time.monotonic() - start < limit:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                command = line.decode()
                commands.append(command)
                answer = respond(command) if respond is not None else None
                if answer is None:
                    if not proc.stdin.closed:
                        proc.stdin.close()
                    respond = None
                elif not proc.stdin.closed:
                    proc.stdin.write(answer)
                    proc.stdin.flush()
                    if close_after_reply:
                        proc.stdin.close()
        returncode = proc.wait(timeout=max(0.1, limit - (time.monotonic() - start)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - start
    stderr = proc.stderr.read().decode()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if not stream.closed:
            stream.close()
    return Run(commands, stderr, returncode, seconds)


# -- the script -----------------------------------------------------------------------------------


def test_usage_relayed_as_user_event() -> None:
    run = run_agi(["usage", "module=asr", "quantity=12", "unit=seconds"])
    assert run.commands == [
        'EXEC UserEvent "BotMeter,Signal: usage,Module: asr,Quantity: 12,Unit: seconds"',
        "SET VARIABLE BOTMETER_STATUS ok",
    ]
    assert (run.returncode, run.stderr) == (0, "")
    print(f"\nbotmeter-agi usage: {run.seconds * 1000:.0f} ms wall (target < 200 ms)")


@pytest.mark.parametrize(("args", "data"), [
    (["start"], "BotMeter,Signal: start"),
    (["END"], "BotMeter,Signal: end"),
    (["usage", "MODULE=tts", "Quantity=250.5", "unit=characters", ""],
     "BotMeter,Signal: usage,Module: tts,Quantity: 250.5,Unit: characters"),
    (["usage", "module: qa", "quantity: 1"], "BotMeter,Signal: usage,Module: qa,Quantity: 1"),
    (["outcome", "outcome=handled"], "BotMeter,Signal: outcome,Outcome: handled"),
])
def test_signals(args: list[str], data: str) -> None:
    run = run_agi(args)
    assert run.commands[0] == f'EXEC UserEvent "{data}"'
    assert run.returncode == 0


def test_awkward_values_survive_asterisk_parsing() -> None:
    reason = 'said "agent, now" (twice) \\ then\nhung up'
    run = run_agi(["outcome", "outcome=transferred", "target=sales, 2nd", f"reason={reason}"])
    command = run.commands[0]
    assert "\n" not in command
    words = split_command(command)  # Asterisk's own parsing, as the simulator plays it
    assert words[:2] == ["EXEC", "UserEvent"] and len(words) == 3
    assert split_app_args(words[2]) == [
        "BotMeter", "Signal: outcome", "Outcome: transferred", "Target: sales, 2nd",
        'Reason: said "agent, now" (twice) \\ then hung up']


@pytest.mark.parametrize(("args", "reason"), [
    ([], "no signal given"),
    (["fly"], "unknown signal 'fly'"),
    (["usage", "module=asr", "quantity=-3"], "must be a number >= 0"),
    (["usage", "module=asr", "quantity=lots"], "is not a decimal number"),
    (["usage", "quantity=3"], "usage signal without Module"),
    (["usage", "module=asr", "qty=3"], "(ignored: qty)"),
    (["outcome", "outcome=maybe"], "Outcome 'maybe' is not one of"),
    (["usage", "module"], "is not key=value"),
])
def test_bad_arguments(args: list[str], reason: str) -> None:
    run = run_agi(args)
    assert run.returncode == 0
    assert len(run.commands) == 2
    assert run.commands[0].startswith('VERBOSE "botmeter: ') and reason in run.commands[0]
    assert run.commands[1] == "SET VARIABLE BOTMETER_STATUS error"
    assert run.stderr.startswith("botmeter-agi: ") and reason in run.stderr


def test_stdin_closed_at_once() -> None:
    run = run_agi(["start"], env=b"", respond=None)
    assert (run.commands, run.returncode) == ([], 0)
    assert run.seconds < 1.0


def test_stdin_closes_before_reply() -> None:
    run = run_agi(["start"], respond=lambda command: None)
    assert run.commands == ['EXEC UserEvent "BotMeter,Signal: start"']
    assert run.returncode == 0
    assert "did not run UserEvent" in run.stderr
    assert run.seconds < 1.0


def test_hangup_line_then_reply() -> None:
    run = run_agi(["end"], respond=lambda c: b"HANGUP\n" + ok(c))
    assert run.commands == ['EXEC UserEvent "BotMeter,Signal: end"',
                            "SET VARIABLE BOTMETER_STATUS ok"]
    assert (run.returncode, run.stderr) == (0, "")


def test_dead_channel_511() -> None:
    run = run_agi(["end"], respond=lambda c: b"511 Command Not Permitted on a dead channel\n")
    assert run.commands == ['EXEC UserEvent "BotMeter,Signal: end"']
    assert run.returncode == 0 and "did not run UserEvent" in run.stderr


@pytest.mark.parametrize("answer", [
    b"200 result=-1\n",  # the application failed
    b"200 result=-2\n",  # no such application
    b"510 Invalid or unknown command\n",
    b"100 result=0 Trying...\n520-Invalid command syntax.  Proper usage follows:\n"
    b"Usage: EXEC <application> <options>\n520 End of proper usage.\n",
])
def test_user_event_not_run(answer: bytes) -> None:
    run = run_agi(["end"], respond=lambda c: answer)
    assert run.commands == ['EXEC UserEvent "BotMeter,Signal: end"']
    assert (run.returncode, run.stderr) == (
        0, "botmeter-agi: Asterisk did not run UserEvent (channel gone?)\n")


def test_sighup_while_reading_the_environment_does_not_stop_the_signal() -> None:
    """Asterisk signals a hangup with SIGHUP; an "end" sent then must still be relayed."""
    run = run_agi(["end"], hangup_in_env=True)
    assert run.commands == ['EXEC UserEvent "BotMeter,Signal: end"',
                            "SET VARIABLE BOTMETER_STATUS ok"]
    assert (run.returncode, run.stderr) == (0, "")


def test_no_private_pyst2_attributes() -> None:
    source = Path(agi_script.__file__).read_text()
    assert re.findall(r"\bagi\._\w+", source) == []


def test_520_usage_then_eof() -> None:
    """A 520 usage block cut short by EOF must not loop (pyst2 alone would spin)."""
    run = run_agi(["start"], respond=lambda c: b"520-Invalid command syntax.  Proper usage:\n"
                                              b"Usage: EXEC <application> <options>\n",
                  close_after_reply=True)
    assert run.commands == ['EXEC UserEvent "BotMeter,Signal: start"']
    assert run.returncode == 0
    assert "did not run UserEvent" in run.stderr
    assert run.seconds < 1.0


def test_asterisk_never_answers() -> None:
    run = run_agi(["start"], respond=lambda c: b"")
    assert run.commands == ['EXEC UserEvent "BotMeter,Signal: start"']
    assert run.returncode == 0
    assert "no answer from Asterisk" in run.stderr
    assert run.seconds < 2.0


def test_latin1_environment() -> None:
    run = run_agi(["start"], env=ENV.replace(b"Alice", b"Jos\xe9"))
    assert run.commands[0] == 'EXEC UserEvent "BotMeter,Signal: start"'


def test_wall_time() -> None:
    times = sorted(run_agi(["usage", "module=asr", "quantity=1"]).seconds for _ in range(5))
    print(f"\nbotmeter-agi wall time over 5 runs: min {times[0] * 1000:.0f} ms, "
          f"median {times[2] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms (target < 200 ms)")
    assert times[2] < 1.0  # loose: shared CI machines are slow; the target is 200 ms


# -- helpers --------------------------------------------------------------------------------------


def test_parse_args() -> None:
    assert parse_args(["usage", "Module=asr", " quantity = 2 ", "colour=red"]) == (
        "usage", {"Module": "asr", "Quantity": "2"}, ["colour"])
    assert parse_args([" Outcome ", "outcome: failed", "reason=a=b: c", ""]) == (
        "outcome", {"Outcome": "failed", "Reason": "a=b: c"}, [])
    with pytest.raises(SignalError, match="no signal given"):
        parse_args(["", ""])
    with pytest.raises(SignalError, match="argument 'module' is not key=value"):
        parse_args(["usage", "module"])
    with pytest.raises(SignalError, match="more than 32 fields"):
        parse_args(["start", *(f"k{i}=v" for i in range(33))])


def test_the_script_and_fastagi_read_arguments_alike() -> None:
    args = ["module=asr", "Quantity: 2", "unit=seconds", "colour=red"]
    env = {"agi_network_script": "botmeter/usage"} | {
        f"agi_arg_{i}": arg for i, arg in enumerate(args, 1)}
    assert parse_args(["usage", *args]) == parse_request(env) == (
        "usage", {"Module": "asr", "Quantity": "2", "Unit": "seconds"}, ["colour"])


def test_quoting() -> None:
    assert agi_quote('a "b" \\c\nd') == '"a \\"b\\" \\\\c d"'
    assert app_escape("x,y(z)") == "x\\,y\\(z\\)"
    assert user_event_data(" Usage ", {"Unit": "s", "Module": "asr", "Quantity": "1"}) == (
        "BotMeter,Signal: usage,Module: asr,Quantity: 1,Unit: s")
