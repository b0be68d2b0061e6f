"""Asterisk's side of AGI, for the simulated PBX.

A marker event of `call_events` (`@fastagi`, `@agi`) stands for the dialplan
step `AGI(<AppData>)` on one channel. `run_fastagi` plays it as Asterisk's
res_agi does against a FastAGI server (`agi://host:port/script`), and
`run_agi_script` runs a classic AGI script as a subprocess. Both send the AGI
environment, then answer each command line with `AgiChannel.answer`, which
mimics Asterisk 20: `EXEC UserEvent ...` raises an AMI `UserEvent` on the
channel, `SET VARIABLE` a `VarSet`, and every command is framed by
`AGIExecStart` / `AGIExecEnd` events.

Arguments are unescaped exactly as Asterisk does: an AGI command line by
res_agi's `parse_args`, application data by `ast_app_separate_args`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from botmeter.sim.channels import APP_MARKER
from botmeter.sim.events import AGI_MARKER, FASTAGI_MARKER, SimEvent

log = logging.getLogger(__name__)

Header = tuple[str, str]
Emit = Callable[[str, list[Header]], None]

FASTAGI_PORT = 4573  # res_agi's default when the URL has none
ASTERISK_VERSION = "20.5.0"
MAX_LINE = 8192  # longer AGI command lines end the session
MAX_ARGS = 128  # res_agi's MAX_ARGS (AGI arguments and command words)
USEREVENT_ARGS = 101  # UserEvent(eventname, extra[100])
STDERR_KEEP = 4096  # bytes of a script's stderr kept for the log
_THREAD_IDS = itertools.count(140_000_000_000_001, 7919)
_COMMAND_IDS = itertools.count(1_000_001, 7)
_HARMLESS_APPS = frozenset({"noop", "verbose", "log"})


class AgiFailure(Exception):
    """The AGI session did not run to a good end (the message says why).

    `agistatus` is what Asterisk would set `AGISTATUS` to: FAILURE when the
    AGI could not run (or was cut off), SUCCESS when it ran but did not
    report BOTMETER_STATUS=ok.
    """

    def __init__(self, message: str, agistatus: str = "FAILURE") -> None:
        super().__init__(message)
        self.agistatus = agistatus


def split_command(line: str) -> list[str]:
    """An AGI command line split into words as res_agi's `parse_args` does.

    Spaces and tabs separate words unless inside double quotes; quotes are
    dropped; a backslash makes the next character literal.
    """
    words: list[list[str]] = []
    quoted = escaped = in_word = False
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and not in_word:
                words.append([])
                in_word = True
            continue
        if ch in " \t" and not quoted and not escaped:
            in_word = False
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if not in_word:
            if len(words) >= MAX_ARGS - 1:
                break  # "Too many arguments, truncating"
            words.append([])
            in_word = True
        words[-1].append(ch)
        escaped = False
    return ["".join(word) for word in words]


def split_app_args(data: str, limit: int = MAX_ARGS) -> list[str]:
    """Application data split at commas as `AST_STANDARD_APP_ARGS` does.

    Commas inside (), [] or double quotes do not split; double quotes are
    dropped; a backslash makes the next character literal and is dropped.
    At most `limit` arguments: the last one then takes the rest, unparsed.
    """
    args: list[str] = []
    paren = bracket = 0
    quoted = False
    i, n = 0, len(data)
    ended_on_comma = False
    while i < n and len(args) < limit - 1:
        out: list[str] = []
        ended_on_comma = False
        while i < n:
            ch = data[i]
            i += 1
            if ch == "(":
                paren += 1
            elif ch == ")":
                paren = max(0, paren - 1)
            elif ch == "[":
                bracket += 1
            elif ch == "]":
                bracket = max(0, bracket - 1)
            elif ch == '"':
                quoted = not quoted
                continue
            elif ch == "\\":
                if i < n:
                    out.append(data[i])
                    i += 1
                continue
            elif ch == "," and not (paren or bracket or quoted):
                ended_on_comma = True
                break
            out.append(ch)
        args.append("".join(out))
    if i < n:
        args.append(data[i:])
    elif ended_on_comma:
        args.append("")
    return args


def user_event_fields(data: str) -> tuple[str, list[Header]] | None:
    """(event name, headers) that `UserEvent(<data>)` publishes; None for empty data.

    Each extra argument is `key: value`: the key is kept as written, the value
    stripped; arguments without a colon are skipped; a repeated key keeps its
    first place with the last value (as Asterisk's JSON blob does).
    """
    if not data:
        return None
    args = split_app_args(data, USEREVENT_ARGS)
    blob: dict[str, str] = {"eventname": args[0]}
    for extra in args[1:]:
        key, colon, value = extra.partition(":")
        if colon:
            blob[key] = value.strip()
    name = blob.pop("eventname")
    return name, list(blob.items())


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """The `AGI(...)` step a marker stands for, on one channel."""

    kind: str  # FASTAGI_MARKER or AGI_MARKER
    snapshot: tuple[Header, ...]  # the channel, as its AMI events show it
    app_data: str  # the AGI application's data
    dnid: str

    @classmethod
    def from_marker(cls, event: SimEvent) -> AgiRequest:
        if event.name not in (FASTAGI_MARKER, AGI_MARKER):
            raise ValueError(f"not an AGI marker: {event.name!r}")
        headers = dict(event.headers)
        snapshot = tuple((k, v) for k, v in event.headers if k not in ("AppData", "DNID"))
        return cls(event.name, snapshot, headers["AppData"], headers.get("DNID", "unknown"))

    @property
    def args(self) -> list[str]:
        """The AGI application's arguments: the script (or URL), then its own arguments."""
        return split_app_args(self.app_data)

    def header(self, name: str) -> str:
        return next((v for k, v in self.snapshot if k == name), "")

    def environment(self) -> bytes:
        """The AGI environment Asterisk sends first, ending with a blank line."""
        args = self.args
        request = args[0] if args else ""
        lines: list[Header] = []
        if self.kind == FASTAGI_MARKER:
            lines.append(("agi_network", "yes"))
            script = request.split("://", 1)[-1].partition("/")[2]
            if script:
                lines.append(("agi_network_script", script))
        channel = self.header("Channel")

        def known(value: str) -> str:
            return "unknown" if value in ("", "<unknown>") else value

        lines += [
            ("agi_request", request),
            ("agi_channel", channel),
            ("agi_language", self.header("Language") or "en"),
            ("agi_type", channel.partition("/")[0]),
            ("agi_uniqueid", self.header("Uniqueid")),
            ("agi_version", ASTERISK_VERSION),
            ("agi_callerid", known(self.header("CallerIDNum"))),
            ("agi_calleridname", known(self.header("CallerIDName"))),
            ("agi_callingpres", "0"),
            ("agi_callingani2", "0"),
            ("agi_callington", "0"),
            ("agi_callingtns", "0"),
            ("agi_dnid", self.dnid or "unknown"),
            ("agi_rdnis", "unknown"),
            ("agi_context", self.header("Context")),
            ("agi_extension", self.header("Exten")),
            ("agi_priority", self.header("Priority")),
            ("agi_enhanced", "0.0"),
            ("agi_accountcode", self.header("AccountCode")),
            ("agi_threadid", str(next(_THREAD_IDS))),
        ]
        lines += [(f"agi_arg_{n}", arg) for n, arg in enumerate(args[1:], start=1)]
        return ("".join(f"{k}: {v}\n" for k, v in lines) + "\n").encode("utf-8")


@dataclass(slots=True)
class AgiChannel:
    """Asterisk answering AGI commands for the channel of `request`.

    `emit(name, headers)` sends an AMI event (the channel's snapshot is
    included in `headers`).
    """

    request: AgiRequest
    emit: Emit
    variables: dict[str, str] = field(default_factory=dict)

    def answer(self, line: str) -> str:
        """The reply line (no newline) to one command line."""
        words = split_command(line)
        snapshot = list(self.request.snapshot)
        command_id = str(next(_COMMAND_IDS))
        self.emit("AGIExecStart", [*snapshot, ("Command", line), ("CommandId", command_id)])
        code, result, reply = self._run(words)
        self.emit("AGIExecEnd", [*snapshot, ("Command", line), ("CommandId", command_id),
                                 ("ResultCode", str(code)), ("Result", result)])
        return reply

    def _run(self, words: list[str]) -> tuple[int, str, str]:
        """(result code, its text for AGIExecEnd, the reply line)."""
        verb = [w.lower() for w in words[:2]]
        if not verb:
            return 510, "Invalid or unknown command", "510 Invalid or unknown command"
        if verb[0] == "exec":
            if len(words) < 2:
                return 520, "Usage", "520 Invalid command syntax.  Proper usage not available."
            status = self._exec(words[1], words[2] if len(words) > 2 else "")
            return 200, "Success", f"200 result={status}"
        if verb == ["get", "variable"] and len(words) >= 3:
            value = self._variable(words[2])
            if value is None:
                return 200, "Success", "200 result=0"
            return 200, "Success", f"200 result=1 ({value})"
        if verb == ["set", "variable"] and len(words) >= 4:
            self.variables[words[2]] = words[3]
            self.emit("VarSet", [*self.request.snapshot, ("Variable", words[2]),
                                 ("Value", words[3])])
            return 200, "Success", "200 result=1"
        if verb[0] == "noop":
            return 200, "Success", "200 result=0"
        return 200, "Success", "200 result=1"  # VERBOSE and anything else

    def _exec(self, app: str, data: str) -> int:
        """Run a dialplan application: only UserEvent does something here."""
        name = app.lower()
        if name == "userevent":
            parsed = user_event_fields(data)
            if parsed is None:
                return -1
            event, fields = parsed
            # EXEC runs the application on the channel: no dialplan step (no Newexten on AMI),
            # but the channel's snapshot, and so CEL, shows it
            self.emit(APP_MARKER, [*self.request.snapshot, ("Application", "UserEvent"),
                                   ("AppData", data)])
            self.emit("UserEvent", [*self.request.snapshot, ("UserEvent", event), *fields])
            return 0
        if name in _HARMLESS_APPS:
            return 0
        log.warning("sim AGI: application %r not available", app)
        return -2

    def _variable(self, name: str) -> str | None:
        functions = {
            "CHANNEL(linkedid)": self.request.header("Linkedid"),
            "CHANNEL(uniqueid)": self.request.header("Uniqueid"),
            "CHANNEL(name)": self.request.header("Channel"),
            "CHANNEL(context)": self.request.header("Context"),
            "CHANNEL(exten)": self.request.header("Exten"),
            "CALLERID(num)": self.request.header("CallerIDNum"),
            "UNIQUEID": self.request.header("Uniqueid"),
        }
        if name in self.variables:
            return self.variables[name]
        return functions.get(name) or None

    @property
    def status(self) -> str:
        """`BOTMETER_STATUS` as the AGI left it ('' if never set)."""
        return self.variables.get("BOTMETER_STATUS", "")


def _check_status(channel: AgiChannel, what: str) -> None:
    if channel.status != "ok":
        raise AgiFailure(f"{what} ended with BOTMETER_STATUS={channel.status or '(unset)'}",
                         "SUCCESS")


async def _serve_commands(reader: asyncio.StreamReader, write: Callable[[bytes], None],
                          channel: AgiChannel) -> None:
    """Answer command lines until the other side closes."""
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # asyncio's "separator is found, but chunk is longer than limit"
            raise AgiFailure(f"AGI command line over {MAX_LINE} bytes") from None
        if not line:
            return
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text.strip():  # an unterminated last line is run too, as res_agi does
            try:
                write((channel.answer(text) + "\n").encode("utf-8"))
            except (ConnectionError, RuntimeError):
                return  # the peer is gone while we answer
        if not line.endswith(b"\n"):
            return


async def run_fastagi(request: AgiRequest, emit: Emit, timeout: float) -> AgiChannel:
    """Play Asterisk's side of one FastAGI session; AgiFailure if it went wrong."""
    url = request.args[0] if request.args else ""
    parts = urlsplit(url)
    if parts.scheme != "agi" or not parts.hostname:
        raise AgiFailure(f"not a FastAGI URL: {url!r}")
    channel = AgiChannel(request, emit)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                parts.hostname, parts.port or FASTAGI_PORT, limit=MAX_LINE)
            writer.write(request.environment())
            await _serve_commands(reader, writer.write, channel)
    except TimeoutError:
        raise AgiFailure(f"FastAGI session to {parts.netloc} not over within {timeout}s") from None
    except OSError as exc:
        raise AgiFailure(f"FastAGI {parts.netloc}: {exc}") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    _check_status(channel, "FastAGI session")
    return channel


async def run_agi_script(request: AgiRequest, emit: Emit, command: Sequence[str],
                         timeout: float) -> AgiChannel:
    """Run a classic AGI script as Asterisk does: `command` stands for the
    script named in the dialplan; its arguments follow on the command line and
    in `agi_arg_N`. Killed if not done within `timeout`; AgiFailure if it went wrong.
    """
    args = request.args[1:]
    channel = AgiChannel(request, emit)
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=MAX_LINE)
    except OSError as exc:
        raise AgiFailure(f"AGI script {command[0]!r} did not start: {exc}") from None
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    errors = bytearray()

    async def drain_stderr() -> None:
        while chunk := await stderr.read(4096):
            errors.extend(chunk)
            del errors[:-STDERR_KEEP]

    def write(data: bytes) -> None:
        if not stdin.is_closing():
            stdin.write(data)

    collector = asyncio.ensure_future(drain_stderr())
    try:
        async with asyncio.timeout(timeout):
            write(request.environment())
            with contextlib.suppress(ConnectionError):
                await stdin.drain()
            await _serve_commands(stdout, write, channel)
            stdin.close()
            await proc.wait()
            await collector
    except TimeoutError:
        raise AgiFailure(f"AGI script not done within {timeout}s (killed)") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
        if not collector.done():
            collector.cancel()
        await asyncio.wait([collector], timeout=1.0)
        if errors:
            log.debug("sim AGI script stderr: %s", errors.decode("utf-8", "replace").strip())
    if proc.returncode != 0:
        raise AgiFailure(f"AGI script exited with status {proc.returncode}", "SUCCESS")
    _check_status(channel, "AGI script")
    return channel
