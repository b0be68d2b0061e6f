"""The doctor's conversation with Asterisk: reach it (TLS if configured), log in, ask for
CoreShowChannels (write class system or reporting), Ping for its clock, then watch the events
that arrive to learn the read classes and whether events carry a Timestamp.

Asterisk answers an action the user may not send with `Response: Error` and `Message:
Permission denied` (manager.c, process_message), and a failed login with `Authentication
failed`; `Ping` answers with Asterisk's clock in `Timestamp` whatever `timestampevents` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable

from ..pbx.ami_client import CHALLENGE, AmiSettings, login_action
from ..pbx.ami_frames import FrameParser, Headers, event_name, parse_frame
from .evidence import NEEDED, ReadEvidence
from .findings import Finding, fail, ok, warn

CONNECT_TIMEOUT = 5.0
ACTION_TIMEOUT = 5.0
#: clock skew against Asterisk: above WARN_SKEW a warning, above FAIL_SKEW a failure
WARN_SKEW, FAIL_SKEW = 1.0, 60.0
MANAGER_CONF = "/etc/asterisk/manager.conf"
RELOAD = "asterisk -rx 'manager reload'"


class _Refused(Exception):
    """A check failed: the finding says what and how to fix it."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.detail)
        self.finding = finding


class AmiSession:
    """One AMI connection: actions answered by ActionID, events to `on_event`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_event: Callable[[Headers], None]) -> None:
        self.reader, self.writer = reader, writer
        self.parser = FrameParser()
        self.on_event = on_event
        self._answers: dict[str, asyncio.Future[Headers]] = {}
        self._count = 0
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for raw in self.parser.feed(data):
                    headers = parse_frame(raw)
                    waiter = self._answers.get(headers.get("ActionID", ""))
                    if event_name(raw) is not None:
                        self.on_event(headers)
                    elif waiter is not None and not waiter.done():
                        waiter.set_result(headers)
        finally:
            for waiter in self._answers.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("Asterisk closed the connection"))

    async def banner(self) -> str:
        """The `Asterisk Call Manager/x.y.z` line (empty if none came)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACTION_TIMEOUT
        while self.parser.banner is None and not self._pump.done() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return self.parser.banner or ""

    async def action(self, fields: dict[str, str]) -> Headers:
        self._count += 1
        action_id = f"botmeter-doctor-{self._count}"
        waiter = self._answers[action_id] = asyncio.get_running_loop().create_future()
        text = "".join(f"{k}: {v}\r\n" for k, v in {**fields, "ActionID": action_id}.items())
        self.writer.write((text + "\r\n").encode("utf-8"))
        await self.writer.drain()
        return await asyncio.wait_for(waiter, ACTION_TIMEOUT)

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self._pump
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


async def check_ami(settings: AmiSettings, *, watch: float,
                    inbound_contexts: frozenset[str] = frozenset(),
                    clock: Callable[[], float] = time.time) -> list[Finding]:
    """Every AMI finding, in order; a check that fails ends the ones that need it."""
    evidence = ReadEvidence(inbound_contexts)
    loop = asyncio.get_running_loop()
    findings: list[Finding] = []
    try:
        session = await _connect(settings, lambda h: evidence.feed(h, loop.time()), findings)
    except _Refused as refused:
        return [*findings, refused.finding]
    try:
        await _login(session, settings, findings)
        findings.append(await _write_permission(session, settings))
        findings.append(await _clock_skew(session, clock))
        await _watch(evidence, watch)
        findings += read_findings(evidence, loop.time(), watch, settings.username)
        findings.append(timestamp_finding(evidence, watch))
    except _Refused as refused:
        findings.append(refused.finding)
    except (ConnectionError, TimeoutError) as exc:
        findings.append(fail("ami", f"connection lost during the checks: "
                                    f"{exc or type(exc).__name__}",
                             "see Asterisk's log (/var/log/asterisk/messages)"))
    finally:
        await session.close()
    return findings


async def _connect(settings: AmiSettings, on_event: Callable[[Headers], None],
                   findings: list[Finding]) -> AmiSession:
    where = f"{settings.host}:{settings.port}"
    context = ssl.create_default_context() if settings.tls else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(settings.host, settings.port, ssl=context,
                                    limit=1024 * 1024), CONNECT_TIMEOUT)
    except ssl.SSLError as exc:
        raise _Refused(fail("ami tls", f"TLS with {where} failed: {exc.reason or exc}",
                            "check tlsenable/tlscertfile in manager.conf [general] and that "
                            "this host trusts its certificate (or set [ami] tls = false)")) from None
    except (OSError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or "no answer"
        if isinstance(exc, TimeoutError):
            reason = f"no answer in {CONNECT_TIMEOUT:g} s"
        raise _Refused(fail("ami reachable", f"cannot connect to {where}: {reason}",
                            f"check [ami] host and port, and enabled = yes, port and bindaddr in "
                            f"{MANAGER_CONF} [general]")) from None
    session = AmiSession(reader, writer, on_event)
    banner = await session.banner()
    if not banner.startswith("Asterisk Call Manager"):
        await session.close()
        raise _Refused(fail("ami reachable", f"{where} answered, but not as Asterisk's AMI "
                                             f"(banner {banner[:60]!r})",
                            "check [ami] host and port (the AMI port is 5038 by default)"))
    findings.append(ok("ami reachable", f"{where}: {banner}"))
    if settings.tls:
        findings.append(ok("ami tls", f"TLS with {where}, certificate verified"))
    return session


async def _login(session: AmiSession, settings: AmiSettings, findings: list[Finding]) -> None:
    challenge = None
    fix = (f"make [ami] username and the secret match [{settings.username}] in {MANAGER_CONF} "
           f"(and its permit/deny), then {RELOAD}")
    if settings.auth == "md5":
        answer = await session.action(CHALLENGE)
        challenge = answer.get("Challenge") if answer.get("Response") == "Success" else None
        if not challenge:
            raise _Refused(fail("ami login", f"MD5 challenge refused: "
                                             f"{answer.get('Message', 'no challenge')}",
                                'set [ami] auth = "plain", or allow MD5 in Asterisk'))
    answer = await session.action(login_action(settings, challenge))
    if answer.get("Response") != "Success":
        raise _Refused(fail("ami login", f"user {settings.username!r} refused: "
                                         f"{answer.get('Message', 'login failed')}", fix))
    findings.append(ok("ami login", f"logged in as {settings.username!r} ({settings.auth})"))


async def _write_permission(session: AmiSession, settings: AmiSettings) -> Finding:
    answer = await session.action({"Action": "CoreShowChannels"})
    if answer.get("Response") == "Success":
        return ok("ami write", "CoreShowChannels permitted (write class system or reporting)")
    return fail("ami write", f"CoreShowChannels refused: {answer.get('Message', '?')}",
                f"add write = reporting to [{settings.username}] in {MANAGER_CONF}, then "
                f"{RELOAD}")


async def _clock_skew(session: AmiSession, clock: Callable[[], float]) -> Finding:
    before = clock()
    answer = await session.action({"Action": "Ping"})
    after = clock()
    try:
        theirs = float(answer.get("Timestamp", ""))
    except ValueError:
        return warn("clock skew", "Asterisk's Ping answer carries no Timestamp: cannot compare "
                                  "clocks", "keep both hosts on NTP (chrony)")
    return skew_finding(theirs - (before + after) / 2)


def skew_finding(skew: float) -> Finding:
    """How far Asterisk's clock is from this host's (positive: Asterisk ahead)."""
    text = f"Asterisk's clock is {abs(skew):.3f} s {'ahead of' if skew >= 0 else 'behind'} this host's"
    fix = "keep both hosts on NTP (chrony or systemd-timesyncd)"
    if abs(skew) >= FAIL_SKEW:
        return fail("clock skew", text + ": call times and uplink buckets disagree", fix)
    if abs(skew) >= WARN_SKEW:
        return warn("clock skew", text, fix)
    return ok("clock skew", text)


async def _watch(evidence: ReadEvidence, watch: float) -> None:
    """Until every class is seen, or `watch` seconds passed and no implied event is due."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + watch
    while not evidence.complete():
        due = evidence.waiting_until()
        if loop.time() >= max(deadline, due or deadline):
            return
        await asyncio.sleep(0.05)


def read_findings(evidence: ReadEvidence, now: float, watch: float,
                  username: str) -> list[Finding]:
    """One line per read class botmeter needs."""
    fix = (f"read = {','.join(NEEDED)} in [{username}] of {MANAGER_CONF}, then {RELOAD}")
    findings = []
    for cls, (verdict, detail) in evidence.verdicts(now).items():
        check = f"ami read {cls}"
        if verdict == "seen":
            findings.append(ok(check, f"{detail} event received"))
        elif verdict == "missing":
            findings.append(fail(check, f"no {cls} event arrived although {detail}: the user "
                                        f"may not read class {cls}", fix))
        else:
            findings.append(warn(check, f"not confirmed: no {cls} event in {watch:g} s (no calls "
                                        "just now?)", f"run doctor during a test call (--watch "
                                                      f"60), and check {fix}"))
    return findings


def timestamp_finding(evidence: ReadEvidence, watch: float) -> Finding:
    fix = f"timestampevents = yes in [general] of {MANAGER_CONF}, then {RELOAD}"
    if evidence.unstamped and not evidence.stamped:
        return warn("timestampevents", f"off: {evidence.unstamped} events came without a "
                                       "Timestamp, so calls are timed by botmeter's clock when "
                                       "events arrive", fix)
    if evidence.stamped:
        return ok("timestampevents", f"on: events carry a Timestamp ({evidence.stamped} seen)")
    return warn("timestampevents", f"not confirmed: no event in {watch:g} s", fix)
