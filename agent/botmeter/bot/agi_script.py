"""`botmeter-agi`: classic AGI script relaying a bot signal as `UserEvent(BotMeter, ...)`.

Dialplan: `AGI(botmeter-agi,usage,module=asr,quantity=12,unit=seconds)`. The signal is checked
with `parse_signal`, then Asterisk runs `UserEvent(BotMeter,Signal: usage,Module: asr,...)`,
which reaches the agent over AMI (Asterisk queues it while the agent reconnects).

Whatever happens, the script exits 0 within DEADLINE seconds so the call goes on: bad arguments
are reported on stderr and as an AGI VERBOSE, and `BOTMETER_STATUS` is set to `ok` or `error`.
Only the stdlib, pyst2 and `botmeter.tracking.signals` are imported, to keep start-up short.
"""

from __future__ import annotations

import os
import signal
import sys

from botmeter.tracking.signals import SignalError, parse_signal

from .protocol import MAX_COMMAND, agi_quote, canonical_fields, user_event_data

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: 3 ms of each start-up
if TYPE_CHECKING:
    from typing import IO, Any

DEADLINE = 1.0  # seconds: the whole run, Asterisk's answers included
USAGE = "usage: AGI(botmeter-agi,<signal>,key=value,...)"


class _Eof(Exception):
    """Asterisk closed our stdin."""


class _Deadline(Exception):
    """DEADLINE passed."""


class _Input:
    """Asterisk's side, for pyst2: lines decoded leniently; `HANGUP` and `100 Trying` lines
    skipped; EOF raises (pyst2 would otherwise loop on empty reads or fail obscurely)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def readline(self) -> str:
        while True:
            raw = self._stream.readline(8192)
            if not raw:
                raise _Eof
            line = raw.decode("utf-8", "replace")
            text = line.strip()
            if text == "HANGUP" or text.startswith("100 "):
                continue
            return line


class _Output:
    """Our commands to Asterisk, written straight to the file descriptor (no buffer left to
    flush at exit if Asterisk has gone)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        return len(text)

    def flush(self) -> None:
        pass


class _Quiet:
    """pyst2's debug chatter goes nowhere."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def parse_args(args: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """(signal, fields, ignored unknown keys) from the script's arguments; SignalError if an
    argument is not `key=value` (`key: value` is accepted too)."""
    args = [a for a in args if a.strip()]
    if not args:
        raise SignalError(f"no signal given ({USAGE})")
    pairs = []
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep:
            key, sep, value = arg.partition(":")
        if not sep:
            raise SignalError(f"argument {arg[:60]!r} is not key=value ({USAGE})")
        pairs.append((key, value))
    fields, ignored = canonical_fields(pairs)
    return args[0].strip().lower()[:64], fields, ignored


_armed = False


def _on_alarm(signum: int, frame: Any) -> None:
    if _armed:
        raise _Deadline


def _execute(agi: Any, command: str, *args: str) -> dict[str, Any] | None:
    """One AGI command; None when Asterisk refused it or is gone (never raises)."""
    from asterisk.agi import AGIException

    try:
        return agi.execute(command, *args)  # type: ignore[no-any-return]
    except (AGIException, _Eof, OSError, ValueError):
        return None


def run(args: list[str], stdin: IO[bytes], stdout_fd: int, stderr: IO[str]) -> int:
    """Talk AGI on stdin/stdout; always 0."""
    from asterisk.agi import AGI

    try:
        agi = AGI(stdin=_Input(stdin), stdout=_Output(stdout_fd), stderr=_Quiet())
    except (_Eof, OSError):
        return 0  # no Asterisk at the other end
    # Asterisk sends SIGHUP when the channel hangs up: relay the signal anyway (an "end" signal
    # often comes then); a dead channel is answered 511 and we just stop.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    agi._got_sighup = False
    ignored: list[str] = []
    try:
        name, fields, ignored = parse_args(args)
        parse_signal(name, fields)
        data = agi_quote(user_event_data(name, fields))
        if len(data) + 20 > MAX_COMMAND:
            raise SignalError("signal too long for one AGI command")
    except SignalError as exc:
        reason = str(exc) + (f" (ignored: {', '.join(ignored[:5])})" if ignored else "")
        print(f"botmeter-agi: {reason}", file=stderr, flush=True)
        _execute(agi, "VERBOSE", agi_quote(f"botmeter: {reason}"), "1")
        _execute(agi, "SET VARIABLE", "BOTMETER_STATUS", "error")
        return 0
    if _execute(agi, "EXEC", "UserEvent", data) is None:
        print("botmeter-agi: Asterisk did not run UserEvent (channel gone?)", file=stderr,
              flush=True)
        return 0
    _execute(agi, "SET VARIABLE", "BOTMETER_STATUS", "ok")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console script `botmeter-agi`: exit status is always 0 so the call goes on."""
    global _armed
    args = sys.argv[1:] if argv is None else argv
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, DEADLINE)
    try:
        return run(args, sys.stdin.buffer, sys.stdout.fileno(), sys.stderr)
    except _Deadline:
        print(f"botmeter-agi: no answer from Asterisk within {DEADLINE}s", file=sys.stderr)
        return 0
    except Exception as exc:  # never fail the call for our sake
        print(f"botmeter-agi: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 0
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


if __name__ == "__main__":
    sys.exit(main())
