"""`botmeter-agi`: classic AGI script relaying a bot signal as `UserEvent(BotMeter, ...)`.

Dialplan: `AGI(botmeter-agi,usage,module=asr,quantity=12,unit=seconds)`. The signal is checked
with `parse_signal`, then Asterisk runs `UserEvent(BotMeter,Signal: usage,Module: asr,...)`,
which reaches the agent over AMI (Asterisk queues it while the agent reconnects).

Whatever happens, the script exits 0 within DEADLINE seconds so the call goes on: bad arguments
are reported on stderr and as an AGI VERBOSE, and `BOTMETER_STATUS` is set to `ok` or `error`.
Only the stdlib, pyst2 and `botmeter.tracking.signals` are imported, to keep start-up short.

pyst2 reads the AGI environment and writes the commands (its public `AGI` and `send_command`);
the replies are read with `protocol.ReplyLines` on the same stream, the reader the FastAGI
session uses (pyst2's own trips on `HANGUP` lines, answers `511` with an exception and spins
on a `520` block cut short). Arguments become fields with `protocol.signal_fields`, as FastAGI's
query strings and arguments do.
"""

from __future__ import annotations

import os
import signal
import sys

from botmeter.tracking.signals import SignalError, StartSignal, parse_signal

from .protocol import (
    MAX_COMMAND,
    Reply,
    ReplyLines,
    ReplyTooLong,
    agi_quote,
    signal_fields,
    user_event_data,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: 3 ms of each start-up
if TYPE_CHECKING:
    from types import FrameType
    from typing import IO

    from asterisk.agi import AGI

DEADLINE = 1.0  # seconds: the whole run, Asterisk's answers included
USAGE = "usage: AGI(botmeter-agi,<signal>,key=value,...)"


class _Eof(Exception):
    """Asterisk closed our stdin."""


class _Deadline(Exception):
    """DEADLINE passed."""


class _Input:
    """Asterisk's side, for pyst2 and for our reply reader: lines decoded leniently; EOF raises
    (pyst2 would otherwise loop on empty reads or fail obscurely)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def readline(self) -> str:
        raw = self._stream.readline(8192)
        if not raw:
            raise _Eof
        return raw.decode("utf-8", "replace")


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
    argument is not `key=value` (`key: value` is accepted too) or there are too many."""
    args = [a for a in args if a.strip()]
    if not args:
        raise SignalError(f"no signal given ({USAGE})")
    fields, ignored, not_pairs = signal_fields(args=args[1:])
    if not_pairs:
        raise SignalError(f"argument {not_pairs[0][:60]!r} is not key=value ({USAGE})")
    return args[0].strip().lower()[:64], fields, ignored


_armed = False


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _armed:
        raise _Deadline


def _execute(agi: AGI, replies: _Input, command: str, *args: str) -> Reply | None:
    """Send one AGI command with pyst2 and read Asterisk's reply; None when Asterisk has gone or
    sent no reply within MAX_REPLY_LINES lines (never raises)."""
    try:
        agi.send_command(command, *args)
        reader = ReplyLines()
        while (reply := reader.feed(replies.readline())) is None:
            pass
    except (_Eof, ReplyTooLong, OSError, ValueError):
        return None
    return reply


def _tell(agi: AGI, replies: _Input, stderr: IO[str], reason: str) -> None:
    """A problem with the signal, on stderr and as an AGI VERBOSE message."""
    print(f"botmeter-agi: {reason}", file=stderr, flush=True)
    _execute(agi, replies, "VERBOSE", agi_quote(f"botmeter: {reason}"), "1")


def run(args: list[str], stdin: IO[bytes], stdout_fd: int, stderr: IO[str]) -> int:
    """Talk AGI on stdin/stdout; always 0."""
    from asterisk.agi import AGI

    replies = _Input(stdin)
    try:
        agi = AGI(stdin=replies, stdout=_Output(stdout_fd), stderr=_Quiet())
    except (_Eof, OSError):
        return 0  # no Asterisk at the other end
    # Asterisk sends SIGHUP when the channel hangs up: relay the signal anyway (an "end" signal
    # often comes then); a dead channel is answered 511 and we just stop. (pyst2 set a handler
    # that only its execute() consults; it is not used here.)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ignored: list[str] = []
    try:
        name, fields, ignored = parse_args(args)
        meaning = parse_signal(name, fields)
        if isinstance(meaning, StartSignal) and meaning.dropped:
            # the start still counts: relayed without its Session, the reason told as below
            fields.pop("Session", None)
            _tell(agi, replies, stderr, f"{meaning.dropped}: dropped, the start counts")
        data = agi_quote(user_event_data(name, fields))
        if len(data) + 20 > MAX_COMMAND:
            raise SignalError("signal too long for one AGI command")
    except SignalError as exc:
        _tell(agi, replies, stderr,
              str(exc) + (f" (ignored: {', '.join(ignored[:5])})" if ignored else ""))
        _execute(agi, replies, "SET VARIABLE", "BOTMETER_STATUS", "error")
        return 0
    reply = _execute(agi, replies, "EXEC", "UserEvent", data)
    if reply is None or not reply.ok or reply.result == "-2":  # -2: no such application
        print("botmeter-agi: Asterisk did not run UserEvent (channel gone?)", file=stderr,
              flush=True)
        return 0
    _execute(agi, replies, "SET VARIABLE", "BOTMETER_STATUS", "ok")
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
