"""The bot platform's session id (`start` signal, `Session`; the record's `bot_session_id`): the
rule, how each way of signalling carries it, tracking, storage and its migration, and
`botmeter calls --session`. Over real sockets: tests/test_bot_session_e2e.py."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from botmeter.bot.agi_script import parse_args
from botmeter.bot.protocol import agi_quote, user_event_data
from botmeter.bot.session import parse_request
from botmeter.cli import main
from botmeter.pbx.events import BotSignal, BridgeEntered
from botmeter.rating import PlanBook, rate_calls
from botmeter.recovery.cel import CelRow, CelTranslator
from botmeter.sim.agi import split_app_args, split_command
from botmeter.storage.spill import decode_record, encode_record
from botmeter.storage.store import CallFilter, CallStore
from botmeter.tracking.record import ModuleUsage, iso_utc
from botmeter.tracking.signals import StartSignal, parse_signal
from botmeter.tracking.tracker import CallTracker
from botmeter.uplink.summary import summarize

from .rating_support import PLANS_DIR
from .test_agi_script import run_agi
from .test_store import layout, record
from .test_tracker import RULES, Call
from .uplink_support import HOUR, T0, hourly_calls

ROOT = Path(__file__).resolve().parents[1]

#: session ids kept exactly as sent (after surrounding spaces go, as from every value)
KEPT = [
    ("conv-7f3a9c21", "conv-7f3a9c21"),
    ("CA5e1f0c2d9b8a47e6a1b2c3d4e5f60718", "CA5e1f0c2d9b8a47e6a1b2c3d4e5f60718"),
    ('a&b=c,d%25 e/会话 "q\\" (x) [y]?#+', 'a&b=c,d%25 e/会话 "q\\" (x) [y]?#+'),
    ("m" * 128, "m" * 128),
    ("  padded id  ", "padded id"),
    ("Case-Matters", "Case-Matters"),
]
#: session ids dropped (the start still counts), with what the reason names
DROPPED = [
    ("L" * 129, "longer than 128 characters"),
    ("tab\there", "control character (U+0009)"),
    ("esc\x1b[2J", "control character (U+001B)"),
    ("del\x7f", "control character (U+007F)"),
    ("c1\x85nel", "control character (U+0085)"),
    ("zero\u200bwidth", "non-printable character (U+200B)"),
    ("no\u00a0break", "non-printable character (U+00A0)"),
    ("line\u2028sep", "non-printable character (U+2028)"),
]


# -- the rule ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "kept"), KEPT)
def test_a_session_is_kept_exactly(sent: str, kept: str) -> None:
    assert parse_signal("start", {"Session": sent}) == StartSignal(kept)


@pytest.mark.parametrize(("sent", "reason"), DROPPED)
def test_a_bad_session_is_dropped_with_the_reason_and_the_start_still_counts(
        sent: str, reason: str) -> None:
    meaning = parse_signal("start", {"Session": sent})
    assert isinstance(meaning, StartSignal) and meaning.session is None
    assert meaning.dropped is not None
    assert meaning.dropped.startswith("start signal: Session ") and reason in meaning.dropped


@pytest.mark.parametrize("fields", [{}, {"Session": ""}, {"Session": "   "}, {"Other": "x"}])
def test_an_empty_or_absent_session_is_none_and_nothing_to_report(fields: dict) -> None:
    assert parse_signal("start", fields) == StartSignal(None, None)


@pytest.mark.parametrize("name", ["session", "SESSION", "Session"])
def test_the_field_name_is_case_insensitive(name: str) -> None:
    assert parse_signal("START", {name: "s-1"}) == StartSignal("s-1")


# -- the three ways read it alike -------------------------------------------------------------

@pytest.mark.parametrize(("sent", "kept"), KEPT)
def test_fastagi_query_and_arguments_and_the_agi_script_give_the_same_session(
        sent: str, kept: str) -> None:
    for env in ({"agi_network_script": f"botmeter/start?session={quote(sent, safe='')}"},
                {"agi_network_script": "botmeter/start", "agi_arg_1": f"session={sent}"}):
        signal, fields, ignored = parse_request(env)
        assert (signal, ignored) == ("start", [])
        assert parse_signal(signal, fields) == StartSignal(kept)
    name, fields, _ = parse_args(["start", f"session={sent}"])
    assert parse_signal(name, fields) == StartSignal(kept)


def test_asterisks_urlencode_of_a_session_reaches_fastagi_unchanged() -> None:
    """What `${URIENCODE(...)}` writes: everything but letters, digits and -_.!~*'() as %XX
    of its UTF-8 bytes (a plus sign too, which a URL query would otherwise not change)."""
    sent = "a+b c&d=e,f%g/会"
    encoded = quote(sent, safe="-_.!~*'()")
    assert "+" not in encoded and "," not in encoded
    _, fields, _ = parse_request({"agi_network_script": f"botmeter/start?session={encoded}"})
    assert parse_signal("start", fields) == StartSignal(sent)


@pytest.mark.parametrize("value", [kept for _, kept in KEPT])
def test_the_agi_scripts_user_event_data_splits_back_into_the_same_session(value: str) -> None:
    """As Asterisk reads it: the AGI command line's words, then UserEvent's arguments."""
    data = user_event_data("start", {"Session": value})
    words = split_command(f"EXEC UserEvent {agi_quote(data)}")
    assert words[:2] == ["EXEC", "UserEvent"] and len(words) == 3
    assert split_app_args(words[2]) == ["BotMeter", "Signal: start", f"Session: {value}"]


def test_a_bracket_in_a_relayed_value_joins_no_later_argument() -> None:
    """Asterisk counts `[` and `(` as it splits arguments, even inside quotes: each is escaped
    in what the script relays, so a Target with a lone bracket stays one argument."""
    data = user_event_data("outcome", {"Outcome": "transferred", "Target": "q[1",
                                       "Reason": "x(", "Session": "s"})
    assert split_app_args(split_command(f"EXEC UserEvent {agi_quote(data)}")[2]) == [
        "BotMeter", "Signal: outcome", "Outcome: transferred", "Target: q[1", "Reason: x(",
        "Session: s"]


def test_the_agi_script_relays_a_hostile_session_as_one_header() -> None:
    value = KEPT[2][1]
    run = run_agi(["start", f"session={value}"])
    assert run.returncode == 0 and run.stderr == ""
    assert run.commands[1] == "SET VARIABLE BOTMETER_STATUS ok"
    data = split_command(run.commands[0])[2]
    assert split_app_args(data) == ["BotMeter", "Signal: start", f"Session: {value}"]


@pytest.mark.parametrize(("sent", "reason"), DROPPED[:3])
def test_the_agi_script_drops_a_bad_session_says_why_and_relays_the_start(
        sent: str, reason: str) -> None:
    run = run_agi(["start", f"session={sent}", "other=1"])
    assert run.returncode == 0
    assert "botmeter-agi: start signal: Session " in run.stderr and reason in run.stderr
    assert "dropped, the start counts" in run.stderr
    verbose, relay, status = run.commands
    assert verbose.startswith('VERBOSE "botmeter: start signal: Session ') and reason in verbose
    assert relay == 'EXEC UserEvent "BotMeter,Signal: start"'
    assert status == "SET VARIABLE BOTMETER_STATUS ok"


# -- tracking ---------------------------------------------------------------------------------

def _problems() -> tuple[CallTracker, list[tuple[str, dict]]]:
    problems: list[tuple[str, dict]] = []
    return CallTracker(RULES, on_problem=lambda m, c: problems.append((m, c))), problems


def test_the_first_session_wins_and_another_one_is_reported() -> None:
    tracker, problems = _problems()
    c = Call(tracker).create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    c.signal(2.1, "start")  # no session yet
    c.signal(2.2, "start", Session="conv-1")
    c.signal(2.3, "start", Session="conv-1")  # the same again: silent
    c.signal(2.4, "start", Session="conv-2")
    [r] = c.hangup(5.0).done
    assert r.bot_session_id == "conv-1" and r.bot_answered_at == 2.0  # no time changed
    assert problems == [("bot session id ignored: the call's bot named another one first",
                         {"call_id": "100.1", "linkedid": "100.1", "kept": "conv-1",
                          "ignored": "conv-2"})]


def test_a_bad_session_is_reported_once_and_the_start_answers_the_call() -> None:
    tracker, problems = _problems()
    c = Call(tracker).create(1.0).step(1.0, "from-pstn")  # a bot the dialplan does not show
    c.signal(3.0, "start", Session="x" * 200)
    c.signal(3.5, "start", Session="conv-ok")  # a good one later is still the first kept
    [r] = c.hangup(9.0).done
    assert (r.bot_answered_at, r.outcome, r.bot_session_id) == (3.0, "handled", "conv-ok")
    [(message, context)] = problems
    assert message == "bot session id dropped: the start signal counts without it"
    assert context["linkedid"] == "100.1" and context["via"] == "ami"
    assert "is longer than 128 characters" in context["reason"]


def test_a_session_sent_before_the_call_is_seen_is_kept_and_reported_once() -> None:
    tracker, problems = _problems()
    tracker.feed(BotSignal(0.5, "200.1", "", "start", {"Session": "bad\tone"}, via="fastagi"))
    tracker.feed(BotSignal(0.6, "200.1", "", "start", {"Session": "会话 1"}, via="fastagi"))
    assert tracker.pending_signals == 2
    c = Call(tracker, uid="200.1").create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    [r] = c.hangup(3.0).done
    assert r.bot_session_id == "会话 1"
    assert [m for m, _ in problems] == [
        "bot session id dropped: the start signal counts without it"]
    assert problems[0][1]["via"] == "fastagi"


@pytest.mark.parametrize("first", ["caller", "agent"])
def test_two_calls_that_are_one_keep_the_session_sent_first(first: str) -> None:
    tracker, problems = _problems()
    a = Call(tracker, uid="400.1").create(1.0).step(1.0, "from-pstn").step(2.0, "voicebot")
    b = Call(tracker, uid="400.2", name="PJSIP/agent-2").create(1.5)
    sessions = {"caller": (a, "from-caller"), "agent": (b, "from-agent")}
    order = ["caller", "agent"] if first == "caller" else ["agent", "caller"]
    for n, who in enumerate(order):
        call, session = sessions[who]
        call.signal(2.5 + n, "start", Session=session)
    b.feed(BridgeEntered(4.0, "400.2", "400.1", "PJSIP/agent-2", "b9"))
    a.hangup(6.0)
    [r] = b.hangup(7.0, uid="400.2").done + a.done
    kept = sessions[first][1]
    assert r.call_id == "400.1" and r.bot_session_id == kept
    assert [(m, c["kept"]) for m, c in problems] == [
        ("bot session id ignored: the call's bot named another one first", kept)]


# -- CEL recovery reads it as AMI does ------------------------------------------------------------

def _app_row(eventtype: str, appname: str, appdata: str) -> CelRow:
    return CelRow(1795706741.5, eventtype, "1795706738.4", "1795706738.4",
                  "Local/s@caller-sim-00000001;1", "voicebot", "s", appname, appdata)


@pytest.mark.parametrize(("appname", "appdata"), [
    ("UserEvent", 'BotMeter,Signal: start,Session: "a,b \\"q\\" (x) [y]"'),  # ${QUOTE()}
    ("UserEvent", "BotMeter,Signal: start,Session: a\\,b \\\"q\\\" \\(x\\) \\[y\\]"),
    ("AGI", "agi://127.0.0.1:4573/botmeter/start?session=a%2Cb%20%22q%22%20(x)%20%5By%5D"),
])
def test_cel_gives_the_session_a_userevent_or_fastagi_step_carried(appname: str,
                                                                  appdata: str) -> None:
    [_, signal] = CelTranslator().feed(_app_row("APP_START", appname, appdata))
    assert isinstance(signal, BotSignal) and signal.via == "cel"
    assert parse_signal(signal.signal, signal.fields) == StartSignal('a,b "q" (x) [y]')


def test_cel_gives_the_session_of_a_celgenuserevent() -> None:
    row = CelRow(1795706741.5, "USER_DEFINED", "1795706738.4", "1795706738.4",
                 eventextra=json.dumps({"extra": "Signal: start,Session: conv-9"}),
                 userdeftype="BotMeter")
    [signal] = CelTranslator().feed(row)
    assert parse_signal(signal.signal, signal.fields) == StartSignal("conv-9")  # type: ignore[union-attr]


# -- storage --------------------------------------------------------------------------------------

SESSIONS = {"s1": "conv-7f3a9c21", "s2": KEPT[2][1], "s3": "m" * 128, "s4": None}


def _stored(path: Path, extra: int = 0) -> list:
    calls = [record(call_id, 1_795_000_000.0 + n)._replace(bot_session_id=session)
             for n, (call_id, session) in enumerate(SESSIONS.items())]
    calls += [record(f"x{n}", 1_795_100_000.0 + n) for n in range(extra)]
    store = CallStore(path)
    store.save(calls)
    store.close()
    return calls


def test_the_session_is_stored_and_read_back_and_spilled_exactly(tmp_path: Path) -> None:
    calls = _stored(tmp_path / "s.db")
    store = CallStore(tmp_path / "s.db")
    assert store.calls() == calls
    assert dict(store.db.conn.execute("SELECT call_id, bot_session_id FROM calls")) == SESSIONS
    store.close()
    assert [decode_record(encode_record(c)) for c in calls] == calls


def test_a_spill_line_written_before_the_session_existed_still_loads() -> None:
    """A spill file left by the previous version (its records have no bot_session_id) is read
    after an upgrade: the field takes its default. Unknown fields still make no record."""
    call = record("old")
    line = json.loads(encode_record(call))
    del line["call"]["bot_session_id"]
    assert decode_record(json.dumps(line)) == call
    line["call"]["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        decode_record(json.dumps(line))


def test_a_version_10_database_migrates_keeping_its_calls(tmp_path: Path) -> None:
    path = tmp_path / "v10.db"
    calls = [c._replace(bot_session_id=None) for c in _stored(path, extra=20)]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("DROP INDEX calls_bot_session_id; "  # version 10's layout
                       "ALTER TABLE calls DROP COLUMN bot_session_id; PRAGMA user_version = 10;")
    before = conn.execute("SELECT * FROM calls ORDER BY call_id").fetchall()
    conn.close()

    store = CallStore(path)
    assert store.schema_version == 11
    assert store.calls() == sorted(calls, key=lambda c: (c.offered_at, c.call_id))
    db = store.db.conn
    names = [c[1] for c in db.execute("PRAGMA table_info(calls)")]
    assert db.execute(f"SELECT {', '.join(n for n in names if n != 'bot_session_id')} "
                      "FROM calls ORDER BY call_id").fetchall() == before
    assert db.execute("SELECT count(*) FROM calls WHERE bot_session_id IS NOT NULL"
                      ).fetchone() == (0,)
    assert layout(db) == layout(CallStore(tmp_path / "fresh.db").db.conn)
    store.save([calls[0]._replace(bot_session_id="conv-new")])
    assert [c.call_id for c in store.calls(CallFilter(session="conv-new"))] == [calls[0].call_id]
    store.close()
    assert CallStore(path).schema_version == 11  # reopening: nothing to do


def test_listing_by_session_reads_the_index(tmp_path: Path) -> None:
    _stored(tmp_path / "i.db", extra=500)
    store = CallStore(tmp_path / "i.db")
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    listed = store.calls(CallFilter(session=SESSIONS["s2"]))
    store.db.conn.set_trace_callback(None)
    assert [c.call_id for c in listed] == ["s2"]
    [select] = [s for s in statements if "bot_session_id =" in s]
    plan = " ".join(row[3] for row in store.db.conn.execute(f"EXPLAIN QUERY PLAN {select}"))
    assert "USING INDEX calls_bot_session_id" in plan, plan
    store.close()


# -- botmeter calls -----------------------------------------------------------------------------

def _calls(db: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["calls", "--db", str(db), *args])
    return result.exit_code, result.output


def test_calls_shows_the_session_in_json_and_csv_and_filters_by_it(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    _stored(db)
    code, out = _calls(db, "--format", "json")
    assert code == 0
    assert {c["call_id"]: c["bot_session_id"] for c in json.loads(out)} == SESSIONS
    code, out = _calls(db, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["call_id"]: r["bot_session_id"] or None for r in rows} == SESSIONS
    for call_id, session in SESSIONS.items():
        if session is not None:
            code, out = _calls(db, "--session", session, "--format", "json")
            assert code == 0 and [c["call_id"] for c in json.loads(out)] == [call_id]
    code, out = _calls(db, "--session", "conv-7F3A9C21", "--format", "json")  # exact: case
    assert code == 0 and json.loads(out) == []


def test_the_table_has_a_session_column_only_when_a_listed_call_has_one(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    calls = [c._replace(outcome="transferred", transfer_target="Local/agent1@human-agents",
                        transferred_at=c.bot_ended_at, human_answered_at=c.ended_at - 0.5,
                        caller_name="María José", modules={
                            "asr": ModuleUsage(Decimal("11.1"), "seconds"),
                            "nlu": ModuleUsage(Decimal(2), "requests")})
             for c in _stored(db)]
    store = CallStore(db)  # rated, so that the table has all its columns, cost included
    store.save(calls, rate_calls(calls, PlanBook.load(PLANS_DIR).series("per-minute")))
    store.close()
    code, out = _calls(db)
    header = next(line for line in out.splitlines() if "offered (UTC)" in line)
    assert code == 0 and "4 calls" in out and "conv-7f3a9c21" in out
    # the table is as much wider: no other column is cut for it
    assert [name.strip() for name in header.strip("┃ ").split("┃")] == [
        "offered (UTC)", "caller", "name", "session", "outcome", "ring s", "bot s", "human s",
        "target", "cause", "csat", "modules", "cost"]
    assert "0.1200 CNY" in out and "asr 11.1 s" in out
    code, out = _calls(db, "--since", iso_utc(1_795_000_003.0))  # s4 alone: it has none
    assert code == 0 and "1 calls" in out and "session" not in out
    assert "modules" in out and "offered (UTC)" in out


@pytest.mark.parametrize(("value", "reason"), [
    ("", "Session is empty"), ("x" * 129, "longer than 128 characters"),
    ("a\tb", "control character (U+0009)"),
])
def test_calls_refuses_a_session_no_call_can_have(tmp_path: Path, value: str,
                                                  reason: str) -> None:
    db = tmp_path / "r.db"
    _stored(db)
    done = subprocess.run([sys.executable, "-m", "botmeter.cli", "calls", "--db", str(db),
                           "--session", value], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done
    assert "--session" in done.stderr and reason in done.stderr
    assert "no call can have it" in done.stderr and "Traceback" not in done.stderr


# -- the uplink ---------------------------------------------------------------------------------

def test_the_uplinks_summaries_do_not_carry_session_ids() -> None:
    """docs/uplink.md's summaries are per bucket: a call's session id changes nothing in
    them and appears nowhere in them."""
    series = PlanBook.load(PLANS_DIR).series("per-minute")
    calls = hourly_calls(1, 4)
    with_ids = [c._replace(bot_session_id=f"conv-secret-{n}") for n, c in enumerate(calls)]
    plain = summarize(series, T0, T0 + HOUR, calls, rate_calls(calls, series))
    tagged = summarize(series, T0, T0 + HOUR, with_ids, rate_calls(with_ids, series))
    assert tagged == plain and "conv-secret" not in json.dumps(tagged)
