"""Session ids end to end over real loopback sockets: a simulated Asterisk whose bots send
hostile and bad `Session` values every way (UserEvent over AMI, FastAGI to the agent's server,
the `botmeter-agi` script as a subprocess, an ARI bot's user event) to the running agent, which
stores them in SQLite; and the same calls rebuilt from the simulator's CEL."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from botmeter.demo import mismatches, record_scripted_calls
from botmeter.recovery.cel import cel_events
from botmeter.recovery.cel_source import open_cel
from botmeter.recovery.rebuild import rebuild
from botmeter.sim.scenarios import ScriptedCall, expected_session
from botmeter.sim.truth import SIM_RULES, typed_event
from botmeter.tracking.tracker import CallTracker

from .gap_support import timeline, write_records

#: what the bots send as `Session`: kept (hostile characters, the longest, padded), none
#: (empty), and dropped (too long, control characters, not printable)
SENT = ['a&b=c,d%25 e/会话 "q\\" (x) [y]?#+', "m" * 128, "  padded id  ", "", "L" * 129,
        "tab\there", "esc\x1b[2J", "zero\u200bwidth"]
DROPPED = "bot session id dropped: the start signal counts without it"


def _calls() -> list[ScriptedCall]:
    """Each session sent each way, by a dialplan bot (handled, transferred) and an ARI bot."""
    calls = []
    for n, session in enumerate(SENT):
        for w, via in enumerate(("userevent", "fastagi", "agi")):
            calls.append(ScriptedCall(
                f"1350{n:03d}{w:04d}", "会话", "transferred" if n % 2 else "handled", 0.5, 1.0,
                0.5 if n % 2 else None, signal_via=via, session=session,  # type: ignore[arg-type]
                start_offset=0.1 * len(calls)))
        calls.append(ScriptedCall(f"1351{n:03d}0000", "ARI", "handled", 0.5, 1.0, bot="ari",
                                  session=session, start_offset=0.1 * len(calls)))
    return calls


def _way(call: ScriptedCall) -> str:
    return "ari" if call.bot == "ari" else call.signal_via


async def test_every_way_keeps_a_session_exactly_or_drops_a_bad_one_with_a_log_line(
        tmp_path: Path) -> None:
    calls = _calls()
    with capture_logs() as logs:
        records = await record_scripted_calls(calls, tmp_path / "calls.db", speed=20,
                                              concurrency=len(calls), timeout=120)
    by_number = {r.caller_number: r for r in records}
    assert len(by_number) == len(calls)
    for call in calls:  # the whole record as scripted, bot_session_id included
        assert mismatches(call, by_number.get(call.caller_number)) == [], (_way(call), call)
        assert by_number[call.caller_number].bot_session_id == expected_session(call.session)
    kept = {r.bot_session_id for r in records} - {None}
    assert kept == {SENT[0], SENT[1], "padded id"}
    # one log line per dropped session, from the agent for the ways that reach it with the
    # session; botmeter-agi drops it itself (tests/test_bot_session.py) and relays the start
    number_of = {r.call_id: r.caller_number for r in records}
    logged = sorted((number_of[e["call_id"]], e["via"]) for e in logs if e["event"] == DROPPED)
    dropped = [c for c in calls if c.session and expected_session(c.session) is None]
    assert logged == sorted((c.caller_number, "fastagi" if c.signal_via == "fastagi" else "ami")
                            for c in dropped if c.signal_via != "agi")
    assert all(e["reason"].startswith("start signal: Session ") for e in logs
               if e["event"] == DROPPED)
    # nothing else went wrong: no signal refused, no session reported twice
    assert not [e for e in logs if e["event"] in ("malformed bot signal ignored",
                                                  "fastagi bad signal refused")]


def test_calls_rebuilt_from_cel_carry_the_same_sessions(tmp_path: Path) -> None:
    """CEL keeps a UserEvent's data and a FastAGI request as the dialplan wrote them (the
    simulator writes the session with ${QUOTE()} and ${URIENCODE()}, as docs/signals.md says
    to): the rebuilt records equal those AMI gave, session ids included, and a dropped one is
    reported again, with via=cel."""
    calls = [c for c in _calls() if c.bot == "dialplan" and c.signal_via != "agi"]
    events, _ = timeline(calls, 1_795_800_000.0, 3.0)
    tracker = CallTracker(SIM_RULES)
    from_ami = {}
    for stamp, event in events:
        typed = typed_event(stamp, event)
        for record in tracker.feed(typed) if typed is not None else ():
            from_ami[record.call_id] = record
    write_records(events, cel_db=tmp_path / "cel.db")
    problems: list[tuple[str, dict]] = []
    with open_cel(tmp_path / "cel.db") as cel:
        rebuilt, _ = rebuild(cel_events(cel.rows(0.0)), SIM_RULES, source="cel",
                             on_problem=lambda m, c: problems.append((m, c)))
    assert len(rebuilt) == len(from_ami) == len(calls)
    for record in rebuilt:
        assert record._replace(source="ami") == from_ami[record.call_id], record.call_id
    assert {r.caller_number: r.bot_session_id for r in rebuilt} == {
        c.caller_number: expected_session(c.session) for c in calls}
    dropped = [c for c in calls if c.session and expected_session(c.session) is None]
    assert sorted(c["via"] for m, c in problems if m == DROPPED) == ["cel"] * len(dropped)
