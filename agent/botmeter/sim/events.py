"""Pure generation of the AMI events of one scripted call, modelled on Asterisk 20.

`call_events(call, ids)` returns the whole event sequence of a call as
(virtual offset, event name, headers) with no I/O, so it is easy to test; the
simulated PBX only schedules and sends what it returns. The dialplan being
"played" is the lab's (tests/fixtures/lab-extensions.conf): calls enter
`from-pstn`, ring, are answered, run `Gosub(voicebot,s,1)`, then hang up,
go to Queue(support) or Dial(Local/agent1@human-agents/n), or fail with
Hangup(41).

The bot's signals go the call's `signal_via` way. `UserEvent(BotMeter,...)`
is plain AMI; an `AGI(...)` step is a `Newexten` followed by a *marker*: a
`SimEvent` whose name starts with "@" (`@fastagi`, `@agi`), which is never
sent to AMI clients; the PBX runs the AGI session it stands for (see
`botmeter.sim.agi`). A marker's headers are the channel's snapshot, then
`AppData` (the AGI application's data) and `DNID`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote

from botmeter.sim.scenarios import (
    AGENT_RING_SECONDS,
    ARI_APP,
    DIAL_AGENT,
    NLU_REQUESTS,
    NO_ANSWER_SECONDS,
    QUEUE_NAME,
    SURVEY_SECONDS,
    WARM_BRIEF_SECONDS,
    WARM_RETURN_SECONDS,
    ScriptedCall,
)

Header = tuple[str, str]

UNKNOWN = "<unknown>"
#: where a FastAGI signal goes when `call_events` is not told (the spec's example)
DEFAULT_AGI_URL = "agi://127.0.0.1:4573"
#: the classic AGI script's name in the dialplan
AGI_SCRIPT = "botmeter-agi"
#: marker events (never sent): run a FastAGI session / the classic AGI script
FASTAGI_MARKER = "@fastagi"
AGI_MARKER = "@agi"
#: the voicebot context's step that sends the `start` signal (with the session id), right after
#: its first: numbered apart, like the bot's own survey, so the lab's other priorities stay
START_PRIORITY = 30
INBOUND_CONTEXT = "from-pstn"
BOT_CONTEXT = "voicebot"
AGENT_CONTEXT = "human-agents"
QUEUE_MEMBERS = ("desk1", "desk2")
#: an ARI bot's dialplan entry, where its `continue` sends callers, and its media
ARI_CONTEXT = "from-ai-agent"
ARI_QUEUE = ("ext-queues", "300")
ARI_EXTEN = ("from-internal", "2765")
WARM_AGENT = "warm1"
MEDIA_CONTEXT = "default"
#: the ARI bot adds an ExternalMedia channel to its bridge twice (a leave/enter this far apart)
MEDIA_BLIP_SECONDS = 0.1

PRIVILEGES = {
    "Newexten": "dialplan,all",
    "VarSet": "dialplan,all",
    "UserEvent": "user,all",
    "QueueCallerJoin": "agent,all",
    "QueueCallerLeave": "agent,all",
    "QueueCallerAbandon": "agent,all",
    "AgentCalled": "agent,all",
    "AgentConnect": "agent,all",
    "AgentComplete": "agent,all",
    "AgentRingNoAnswer": "agent,all",
    "Shutdown": "system,all",
    "AGIExecStart": "agi,all",
    "AGIExecEnd": "agi,all",
}
DEFAULT_PRIVILEGE = "call,all"

STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}
CAUSE_TEXT = {0: "Unknown", 16: "Normal Clearing", 26: "Answered elsewhere", 41: "Temporary failure"}


class SimEvent(NamedTuple):
    """One AMI event: `offset` virtual seconds after the call starts."""

    offset: float
    name: str
    headers: tuple[Header, ...]  # everything after Event/Privilege/Timestamp


@dataclass(frozen=True, slots=True)
class CallIds:
    """Identifiers reserved for one call (see `ids_needed`)."""

    seq: int  # the call's sequence number in the PBX
    start: float  # virtual unix time of the call's first event
    uniqueid_base: int  # first reserved channel counter (Uniqueid "<time>.<counter>")
    local_base: int  # first reserved Local channel number (Local/...-%08x;1/;2)
    sip_base: int  # reserved SIP channel number (SIP/127.0.0.1-%08x)
    bridge_id: str  # BridgeUniqueid of the call's human bridge


def ids_needed(call: ScriptedCall) -> tuple[int, int, int]:
    """How many (uniqueids, Local channel pairs, SIP channels) the call creates."""
    legs = 0
    if call.outcome == "transferred":
        legs = len(QUEUE_MEMBERS) if call.handoff == "queue" else 1
    media = 1 if call.bot == "ari" and call.outcome != "abandoned" else 0
    if call.via == "local":
        return 2 + 2 * legs + media, 1 + legs, 0
    return 1 + 2 * legs + media, legs, 1


def call_events(call: ScriptedCall, ids: CallIds, *,
                agi_url: str = DEFAULT_AGI_URL) -> list[SimEvent]:
    """The call's whole AMI event sequence, in order, with offsets from its start.

    With `signal_via` "fastagi" or "agi" it holds marker events (see
    `is_marker`); `agi_url` (`agi://host:port`) is where FastAGI signals go.
    """
    script = _Script(call, ids, agi_url.rstrip("/"))
    script.play()
    return script.events


def is_marker(event: SimEvent) -> bool:
    """Whether `event` is a marker for the PBX to run, not an AMI event to send."""
    return event.name.startswith("@")


def dialplan_escape(text: str) -> str:
    """A value written into dialplan application data: `\\ , ( ) [ ] "` backslash-escaped."""
    return "".join("\\" + ch if ch in '\\,()[]"' else ch for ch in text)


def dialplan_quote(text: str) -> str:
    """A value as it reaches an application through `${QUOTE(${VAR})}`, when it needs it (a
    comma, quote, backslash, bracket or parenthesis): in double quotes, with `\\` and `"`
    backslash-escaped, as Asterisk's QUOTE() writes it."""
    if not any(ch in text for ch in '\\,()[]"'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fmt_seconds(value: float) -> str:
    """A number of seconds as dialplan prints it: `3`, `2.5`."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


@dataclass(slots=True)
class _Chan:
    """Mutable snapshot of one channel while the call's script is generated."""

    name: str
    uniqueid: str
    linkedid: str
    state: int
    context: str
    exten: str
    priority: int = 1
    num: str = ""
    cid_name: str = ""
    conn_num: str = ""
    conn_name: str = ""

    def snapshot(self, prefix: str = "") -> list[Header]:
        return [
            (prefix + "Channel", self.name),
            (prefix + "ChannelState", str(self.state)),
            (prefix + "ChannelStateDesc", STATE_DESC[self.state]),
            (prefix + "CallerIDNum", self.num or UNKNOWN),
            (prefix + "CallerIDName", self.cid_name or UNKNOWN),
            (prefix + "ConnectedLineNum", self.conn_num or UNKNOWN),
            (prefix + "ConnectedLineName", self.conn_name or UNKNOWN),
            (prefix + "Language", "en"),
            (prefix + "AccountCode", ""),
            (prefix + "Context", self.context),
            (prefix + "Exten", self.exten),
            (prefix + "Priority", str(self.priority)),
            (prefix + "Uniqueid", self.uniqueid),
            (prefix + "Linkedid", self.linkedid),
        ]


class _Script:
    """Builds the event list of one call; `t` is the current virtual offset."""

    def __init__(self, call: ScriptedCall, ids: CallIds, agi_url: str) -> None:
        self.call = call
        self.ids = ids
        self.agi_url = agi_url
        self.t = 0.0
        self.events: list[SimEvent] = []
        self._uniqueids = 0
        self._locals = 0
        self.action = {"handled": "done", "abandoned": "done", "failed": "fail"}.get(
            call.outcome, "transfer" if call.handoff == "queue" else "dial"
        )

    # ---- primitives -------------------------------------------------------

    def emit(self, name: str, *parts: list[Header]) -> None:
        self.events.append(SimEvent(self.t, name, tuple(h for part in parts for h in part)))

    def _uniqueid(self) -> str:
        counter = self.ids.uniqueid_base + self._uniqueids
        self._uniqueids += 1
        return f"{int(self.ids.start + self.t)}.{counter}"

    def local_pair(self, exten: str, context: str, linkedid: str | None) -> tuple[_Chan, _Chan]:
        """Create both halves of a Local channel (Newchannel ;1 Down, ;2 Ring)."""
        base = f"Local/{exten}@{context}-{self.ids.local_base + self._locals:08x}"
        self._locals += 1
        uid1 = self._uniqueid()
        one = _Chan(base + ";1", uid1, linkedid or uid1, 0, context, exten)
        two = _Chan(base + ";2", self._uniqueid(), linkedid or uid1, 4, context, exten)
        self.emit("Newchannel", one.snapshot())
        self.emit("Newchannel", two.snapshot())
        return one, two

    def exten(self, ch: _Chan, priority: int, app: str, data: str = "", *,
              context: str | None = None, exten: str | None = None) -> None:
        ch.context = context or ch.context
        ch.exten = exten if exten is not None else ch.exten
        ch.priority = priority
        self.emit("Newexten", ch.snapshot(),
                  [("Extension", ch.exten), ("Application", app), ("AppData", data)])

    def varset(self, ch: _Chan, variable: str, value: str) -> None:
        self.emit("VarSet", ch.snapshot(), [("Variable", variable), ("Value", value)])

    def app_set(self, ch: _Chan, priority: int, variable: str, value: str) -> None:
        self.exten(ch, priority, "Set", f"{variable}={value}")
        self.varset(ch, variable, value)

    def newstate(self, ch: _Chan, state: int) -> None:
        ch.state = state
        self.emit("Newstate", ch.snapshot())

    def callerid(self, ch: _Chan, num: str, name: str, *, connected: bool = True) -> None:
        ch.num, ch.cid_name = num, name
        self.emit("NewCallerid", ch.snapshot(),
                  [("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")])
        if connected:
            ch.conn_num, ch.conn_name = num, name
            self.emit("NewConnectedLine", ch.snapshot())

    def local_bridge(self, one: _Chan, two: _Chan) -> None:
        self.emit("LocalBridge", one.snapshot("LocalOne"), two.snapshot("LocalTwo"),
                  [("Context", one.context), ("Exten", one.exten), ("LocalOptimization", "No")])

    def dial(self, name: str, caller: _Chan | None, dest: _Chan, *extra: Header) -> None:
        self.emit(name, caller.snapshot() if caller else [], dest.snapshot("Dest"), list(extra))

    def hangup_request(self, ch: _Chan, cause: int | None, *, soft: bool = False) -> None:
        extra = [] if cause is None else [("Cause", str(cause))]
        self.emit("SoftHangupRequest" if soft else "HangupRequest", ch.snapshot(), extra)

    def hangup(self, ch: _Chan, cause: int) -> None:
        self.emit("Hangup", ch.snapshot(),
                  [("Cause", str(cause)), ("Cause-txt", CAUSE_TEXT.get(cause, "Unknown"))])

    def user_event(self, ch: _Chan, priority: int, *fields: Header) -> None:
        data = ",".join(["BotMeter", *(f"{k}: {dialplan_quote(v)}" for k, v in fields)])
        self.exten(ch, priority, "UserEvent", data)
        self.emit("UserEvent", ch.snapshot(), [("UserEvent", "BotMeter"), *fields])

    def signal(self, ch: _Chan, priority: int, signal: str, *fields: Header,
               step: bool = True) -> None:
        """One bot signal at `priority`, sent the call's `signal_via` way; `step=False`: no
        `Newexten` for it (a signal that reaches the agent after AMI showed the channel gone)."""
        via = self.call.signal_via
        if via == "userevent":
            if step:
                self.user_event(ch, priority, ("Signal", signal), *fields)
            else:
                self.emit("UserEvent", ch.snapshot(),
                          [("UserEvent", "BotMeter"), ("Signal", signal), *fields])
            return
        if via == "fastagi":
            query = "&".join(f"{quote(k.lower(), safe='')}={quote(v, safe='')}"
                             for k, v in fields)
            data, marker = f"{self.agi_url}/botmeter/{signal}?{query}", FASTAGI_MARKER
        else:
            args = [f"{k.lower()}={dialplan_escape(v)}" for k, v in fields]
            data, marker = ",".join([AGI_SCRIPT, signal, *args]), AGI_MARKER
        if step:
            self.exten(ch, priority, "AGI", data)
        dnid = self.call.dialed_number if self.call.via == "sip" else "unknown"
        self.emit(marker, ch.snapshot(), [("AppData", data), ("DNID", dnid)])

    def csat_signals(self, ch: _Chan, priority: int, *, step: bool = True) -> int:
        """The call's csat signals from `priority` on; returns the next free priority."""
        for score, scale in self.call.csat:
            fields = [("Score", score), *([("Scale", scale)] if scale else []),
                      ("Source", "dtmf")]
            self.signal(ch, priority, "csat", *fields, step=step)
            priority += 1
        return priority

    def survey_after_human(self, caller: _Chan, priority: int) -> None:
        """The human hung up; the caller, kept in the dialplan, rates the call by DTMF
        (`Read(CSAT,botmeter-survey,1,,1,5)`), and the dialplan signals the score."""
        self.exten(caller, priority, "Read", "CSAT,botmeter-survey,1,,1,5")
        self.t += SURVEY_SECONDS
        self.varset(caller, "CSAT", self.call.csat[-1][0])
        self.varset(caller, "READSTATUS", "OK")
        self.exten(caller, self.csat_signals(caller, priority + 1), "Hangup")

    def bridge(self, name: str, count: int, ch: _Chan | None = None) -> None:
        self.emit(name, [
            ("BridgeUniqueid", self.ids.bridge_id), ("BridgeType", "basic"),
            ("BridgeTechnology", "simple_bridge"), ("BridgeCreator", UNKNOWN),
            ("BridgeName", UNKNOWN), ("BridgeNumChannels", str(count)),
            ("BridgeVideoSourceMode", "none"),
        ], ch.snapshot() if ch else [])

    def rtp_noise(self, ch: _Chan) -> None:
        self.varset(ch, "RTPAUDIOQOS", "ssrc=0;themssrc=0;lp=0;rxjitter=0.000000;rxcount=0;"
                    "txjitter=0.000000;txcount=0;rlp=0;rtt=0.000000")

    # ---- call phases ------------------------------------------------------

    def play(self) -> None:
        """Generate the whole call."""
        call = self.call
        caller, phone = self.arrive()
        self.t = call.ring_seconds
        if call.outcome == "abandoned":
            # a SIP CANCEL while ringing ends with cause 0, like chan_sip does
            self.caller_leaves(caller, phone, None)
            self.end_caller(caller, None, 0 if phone is None else 16)
            return
        if call.bot == "ari":
            self.ari_call(caller, phone)
            return
        self.enter_bot(caller)
        self.t = call.ring_seconds + call.bot_seconds
        if call.caller_hangs_up:  # mid-bot: from the phone (Local), or a SIP BYE (no cause)
            self.caller_leaves(caller, phone, None if phone is None else 16)
            self.end_caller(caller, None, 16)
            return
        if call.outcome == "failed":
            self.bot_fails(caller, phone)
            return
        self.leave_bot(caller)
        if call.outcome == "handled":
            self.exten(caller, 12, "Hangup")
            self.end_caller(caller, phone, 16, csat_after=call.survey == "caller_gone")
        elif call.handoff == "queue":
            self.queue(caller, phone)
        else:
            self.dial_agent(caller, phone)

    def arrive(self) -> tuple[_Chan, _Chan | None]:
        """t=0: the call is offered and the line starts ringing in from-pstn."""
        call = self.call
        scenario = [("__RING", fmt_seconds(call.ring_seconds)),
                    ("__BOT", fmt_seconds(call.bot_seconds)), ("__ACTION", self.action)]
        if not call.signals:
            scenario.append(("__SIGNALS", "no"))
        phone: _Chan | None = None
        if call.via == "local":
            # an originated Local call: ;1 is the caller channel, ;2 the caller's phone
            caller, phone = self.local_pair("s", "caller-sim", None)
            self.exten(caller, 1, "AppDial2", "(Outgoing Line)")
            for variable, value in scenario:
                self.varset(caller, variable, value)
            self.callerid(caller, call.caller_number, call.caller_name)
            for variable, value in reversed(scenario):
                self.varset(phone, variable, value)
            phone.conn_num, phone.conn_name = call.caller_number, call.caller_name
            self.callerid(phone, call.caller_number, call.caller_name)
            self.local_bridge(caller, phone)
            self.dial("DialBegin", None, caller, ("DialString", "s@caller-sim/n"))
            self.exten(phone, 1, "Answer")
            self.newstate(phone, 6)
            self.newstate(caller, 6)
            self.dial("DialEnd", None, caller, ("DialStatus", "ANSWER"))
        else:
            uid = self._uniqueid()
            caller = _Chan(f"SIP/127.0.0.1-{self.ids.sip_base:08x}", uid, uid, 0,
                           INBOUND_CONTEXT, call.dialed_number, 1,
                           call.caller_number, call.caller_name)
            self.emit("Newchannel", caller.snapshot())
            self.varset(caller, "SIPURI", f"sip:{call.caller_number}@127.0.0.1:5060")
            self.varset(caller, "SIPDOMAIN", "127.0.0.1")
            self.varset(caller, "SIPCALLID", f"{self.ids.seq}-{uid}@127.0.0.1")
            self.newstate(caller, 4)
        self.exten(caller, 1, "NoOp", f"inbound {call.caller_number} -> {call.dialed_number}",
                   context=INBOUND_CONTEXT, exten=call.dialed_number)
        for priority, (variable, value) in enumerate(scenario[:3], start=2):
            self.app_set(caller, priority, variable.lstrip("_"), value)
        self.exten(caller, 5, "Ringing")
        self.exten(caller, 6, "Wait", fmt_seconds(call.ring_seconds))
        if phone is not None:
            patience = 60.0
            if call.outcome == "abandoned" or call.caller_hangs_up:
                patience = call.ring_seconds + call.bot_seconds
            self.exten(phone, 2, "Wait", fmt_seconds(patience))
        return caller, phone

    def enter_bot(self, caller: _Chan) -> None:
        """t=ring: Answer, then the bot's context (this is the bot's answer)."""
        self.exten(caller, 7, "Answer")
        if caller.state != 6:
            self.newstate(caller, 6)
        self.exten(caller, 8, "Gosub", f"{BOT_CONTEXT},s,1")
        self.varset(caller, "LOCAL(ARGC)", "0")
        self.exten(caller, 1, "NoOp", "voice bot answers", context=BOT_CONTEXT, exten="s")
        if self.call.session is not None:
            # UserEvent(BotMeter,Signal: start,Session: ${QUOTE(${BOT_SESSION})}), or FastAGI
            # `start?session=${URIENCODE(${BOT_SESSION})}`, or the script's `session=...`
            self.signal(caller, START_PRIORITY, "start", ("Session", self.call.session))
        self.exten(caller, 2, "Set", "CDR(userfield)=bot")
        failing = self.call.outcome == "failed"
        self.exten(caller, 3, "GotoIf", f"{int(failing)}?fail")
        self.exten(caller, 12 if failing else 4, "Wait", fmt_seconds(self.call.bot_seconds))

    def leave_bot(self, caller: _Chan) -> None:
        """t=ring+bot: signals, Return to from-pstn and its branches."""
        call = self.call
        self.exten(caller, 5, "GotoIf", f"{int(not call.signals)}?done")
        if call.signals:
            self.signal(caller, 6, "usage", ("Module", "asr"),
                        ("Quantity", fmt_seconds(call.bot_seconds)), ("Unit", "seconds"))
            self.signal(caller, 7, "usage", ("Module", "nlu"),
                        ("Quantity", str(NLU_REQUESTS)), ("Unit", "requests"))
            self.exten(caller, 8, "GotoIf", f"{int(self.action == 'done')}?done")
            if self.action != "done":
                target = QUEUE_NAME if self.action == "transfer" else DIAL_AGENT
                self.signal(caller, 9, "outcome", ("Outcome", "transferred"), ("Target", target))
        if call.survey == "bot":
            self.csat_signals(caller, 20)  # the bot's own survey, before it returns
        self.app_set(caller, 10, "BOT_RESULT", self.action)
        self.exten(caller, 11, "Return")
        self.varset(caller, "ARGC", "")
        self.varset(caller, "GOSUB_RETVAL", "")
        self.exten(caller, 9, "GotoIf", f"{int(self.action == 'transfer')}?queue",
                   context=INBOUND_CONTEXT, exten=call.dialed_number)
        if self.action != "transfer":
            self.exten(caller, 10, "GotoIf", f"{int(self.action == 'dial')}?dial")
        if self.action == "done":
            self.exten(caller, 11, "GotoIf", "0?nobody")

    def bot_fails(self, caller: _Chan, phone: _Chan | None) -> None:
        """t=ring+bot: the bot gives up and hangs up with cause 41."""
        self.exten(caller, 13, "GotoIf", f"{int(not self.call.signals)}?failhang")
        if self.call.signals:
            self.signal(caller, 14, "outcome", ("Outcome", "failed"), ("Reason", "nlu timeout"))
        self.app_set(caller, 15, "BOT_RESULT", "fail")
        self.exten(caller, 16, "Hangup", "41")
        self.end_caller(caller, phone, 41)

    def end_caller(self, caller: _Chan, phone: _Chan | None, cause: int, *,
                   csat_after: bool = False) -> None:
        """The caller channel hangs up: the last hangups of the call.

        `phone` is the caller's Local ;2 if it is still up, else None (SIP, or
        the phone already hung up in `caller_leaves`). `csat_after`: the call's csat
        signals (from the caller channel) come after its hangup, before the phone's.
        """
        self.hangup_request(caller, 16, soft=True)
        if self.call.via == "sip":
            self.rtp_noise(caller)
        if phone is None:
            self.hangup(caller, cause)
            return
        self.hangup_request(phone, cause)
        self.hangup(caller, cause)
        if csat_after:
            self.csat_signals(caller, 1, step=False)
        self.hangup_request(phone, 16, soft=True)
        self.hangup(phone, cause)

    def caller_leaves(self, caller: _Chan, phone: _Chan | None, cause: int | None) -> None:
        """The caller hangs up; finish with `end_caller(caller, None, ...)`."""
        if phone is None:
            self.hangup_request(caller, cause)
            return
        self.exten(phone, 3, "Hangup")
        self.hangup_request(phone, 16, soft=True)
        self.hangup_request(caller, 16)
        self.hangup(phone, 16)

    def human_answers(self, one: _Chan, two: _Chan) -> None:
        """The human's phone (the leg's ;2) answers; both halves go Up."""
        self.exten(two, 1, "Answer")
        self.newstate(two, 6)
        one.exten = self.call.dialed_number
        self.newstate(one, 6)

    def bridge_up(self, caller: _Chan, one: _Chan) -> None:
        self.bridge("BridgeCreate", 0)
        self.bridge("BridgeEnter", 1, one)
        self.bridge("BridgeEnter", 2, caller)
        self.varset(one, "BRIDGEPEER", caller.name)
        self.varset(caller, "BRIDGEPEER", one.name)

    def human_hangs_up(self, caller: _Chan, one: _Chan, two: _Chan, talk: float,
                       complete: list[Header] | None) -> None:
        """t=answer: the human talks `talk` seconds, then hangs up and the bridge ends."""
        self.exten(two, 2, "Wait", fmt_seconds(talk))
        self.t += talk
        self.exten(two, 3, "Hangup")
        self.hangup_request(two, 16, soft=True)
        self.hangup_request(one, 16)
        if complete is not None:
            self.dial("AgentComplete", caller, one, *complete,
                      ("HoldTime", str(round(AGENT_RING_SECONDS))),
                      ("TalkTime", str(round(talk))), ("Reason", "agent"))
        self.hangup(two, 16)
        self.varset(one, "BRIDGEPEER", "")
        self.bridge("BridgeLeave", 1, one)
        self.hangup(one, 16)
        self.bridge("BridgeLeave", 0, caller)
        self.bridge("BridgeDestroy", 0)

    def drop_leg(self, caller: _Chan, one: _Chan, two: _Chan, status: str, cause: int) -> None:
        """A ringing leg that is not (or no longer) wanted."""
        self.dial("DialEnd", caller, one, ("DialStatus", status))
        self.hangup_request(two, cause)
        self.hangup(one, cause)
        self.hangup_request(two, 16, soft=True)
        self.hangup(two, cause)

    def queue(self, caller: _Chan, phone: _Chan | None) -> None:
        """t=ring+bot: Queue(support) rings every member (the handoff starts)."""
        call = self.call
        survey = bool(call.csat) and call.survey == "after_human"
        options = "c" if survey else ""  # c: the caller goes on in the dialplan after the human
        self.exten(caller, 13, "Queue",
                   f"{QUEUE_NAME},{options},,,{fmt_seconds(NO_ANSWER_SECONDS)}")
        queue = [("Queue", QUEUE_NAME)]
        self.emit("QueueCallerJoin", caller.snapshot(), queue, [("Position", "1"), ("Count", "1")])
        legs = []
        for desk in QUEUE_MEMBERS:
            one, two = self.local_pair(desk, AGENT_CONTEXT, caller.linkedid)
            self.callerid(one, caller.num, caller.cid_name, connected=False)
            self.exten(one, 1, "AppQueue", "(Outgoing Line)")
            two.conn_num, two.conn_name = caller.num, caller.cid_name
            self.callerid(two, caller.num, caller.cid_name)
            self.local_bridge(one, two)
            member = [("Interface", f"Local/{desk}@{AGENT_CONTEXT}/n"),
                      ("MemberName", f"Local/{desk}@{AGENT_CONTEXT}/n")]
            self.dial("AgentCalled", caller, one, *queue, *member)
            self.dial("DialBegin", caller, one, ("DialString", f"Local/{desk}@{AGENT_CONTEXT}/n"))
            legs.append((one, two, member))
        start = self.t
        if call.human_seconds is not None:
            self.t = start + AGENT_RING_SECONDS
            pick = self.ids.seq % len(legs)
            one, two, member = legs[pick]
            self.human_answers(one, two)
            one.conn_num, one.conn_name = caller.num, caller.cid_name
            self.emit("NewConnectedLine", one.snapshot())
            self.dial("DialEnd", caller, one, ("DialStatus", "ANSWER"))
            for index, (other_one, other_two, _) in enumerate(legs):
                if index != pick:
                    self.drop_leg(caller, other_one, other_two, "CANCEL", 26)
            self.emit("QueueCallerLeave", caller.snapshot(), queue, [("Position", "1"), ("Count", "0")])
            ring = str(round(AGENT_RING_SECONDS))
            self.dial("AgentConnect", caller, one, *queue, *member, ("HoldTime", ring),
                      ("RingTime", ring))
            self.bridge_up(caller, one)
            self.human_hangs_up(caller, one, two, call.human_seconds, [*queue, *member])
            if survey:
                self.survey_after_human(caller, 14)
            self.end_caller(caller, phone, 16)
            return
        self.t = start + NO_ANSWER_SECONDS
        waited = [("HoldTime", str(round(NO_ANSWER_SECONDS)))]
        if self.ids.seq % 2 == 0:
            # the caller gives up waiting
            self.caller_leaves(caller, phone, 16)
            for one, two, _ in legs:
                self.drop_leg(caller, one, two, "CANCEL", 0)
            self.emit("QueueCallerAbandon", caller.snapshot(), queue,
                      [("Position", "1"), ("OriginalPosition", "1")], waited)
            self.emit("QueueCallerLeave", caller.snapshot(), queue, [("Position", "1"), ("Count", "0")])
            self.end_caller(caller, None, 16)
        else:
            # the queue times out and the dialplan hangs up
            for one, two, _ in legs:
                self.drop_leg(caller, one, two, "CANCEL", 0)
            self.emit("QueueCallerLeave", caller.snapshot(), queue, [("Position", "1"), ("Count", "0")])
            self.varset(caller, "QUEUESTATUS", "TIMEOUT")
            self.exten(caller, 14, "Hangup")
            self.end_caller(caller, phone, 16)

    def dial_agent(self, caller: _Chan, phone: _Chan | None) -> None:
        """t=ring+bot: Dial(Local/agent1@human-agents/n) (the handoff starts)."""
        call = self.call
        dialstring = f"{DIAL_AGENT}@{AGENT_CONTEXT}/n"
        survey = bool(call.csat) and call.survey == "after_human"
        options = ",g" if survey else ""  # g: the caller goes on in the dialplan after the human
        self.exten(caller, 15, "Dial",
                   f"Local/{dialstring},{fmt_seconds(NO_ANSWER_SECONDS)}{options}")
        for variable in ("DIALSTATUS", "DIALEDPEERNUMBER", "DIALEDPEERNAME", "ANSWEREDTIME"):
            self.varset(caller, variable, "")
        one, two = self.local_pair(DIAL_AGENT, AGENT_CONTEXT, caller.linkedid)
        self.varset(one, "DIALEDPEERNUMBER", dialstring)
        one.num, one.cid_name = call.dialed_number, caller.cid_name
        self.exten(one, 1, "AppDial", "(Outgoing Line)", exten=call.dialed_number)
        self.callerid(one, call.dialed_number, caller.cid_name)
        two.conn_num, two.conn_name = caller.num, caller.cid_name
        self.callerid(two, caller.num, caller.cid_name)
        self.local_bridge(one, two)
        self.dial("DialBegin", caller, one, ("DialString", dialstring))
        if call.human_seconds is None:
            self.t += NO_ANSWER_SECONDS
            self.drop_leg(caller, one, two, "NOANSWER", 0)
            self.varset(caller, "DIALSTATUS", "NOANSWER")
            self.exten(caller, 16, "Hangup")
            self.end_caller(caller, phone, 16)
            return
        self.t += AGENT_RING_SECONDS
        self.human_answers(one, two)
        self.varset(caller, "DIALSTATUS", "ANSWER")
        self.varset(caller, "DIALEDPEERNAME", one.name)
        self.dial("DialEnd", caller, one, ("DialStatus", "ANSWER"))
        self.exten(one, 1, "AppDial", "(Outgoing Line)", exten="")
        self.bridge_up(caller, one)
        self.human_hangs_up(caller, one, two, call.human_seconds, None)
        self.varset(caller, "ANSWEREDTIME", str(round(call.human_seconds)))
        if survey:
            self.survey_after_human(caller, 16)
        self.end_caller(caller, phone, 16)

    # ---- an ARI bot (modelled on tests/fixtures/lab-ari-basic.ami) ---------

    def stasis_bridge(self, name: str, count: int, ch: _Chan | None = None) -> None:
        self.emit(name, [
            ("BridgeUniqueid", "ari-" + self.ids.bridge_id), ("BridgeType", "stasis"),
            ("BridgeTechnology", "simple_bridge"), ("BridgeCreator", "Stasis"),
            ("BridgeName", UNKNOWN), ("BridgeNumChannels", str(count)),
            ("BridgeVideoSourceMode", "none"),
        ], ch.snapshot() if ch else [])

    def ari_call(self, caller: _Chan, phone: _Chan | None) -> None:
        """t=ring: into Stasis; the bot answers over ARI, bridges the caller with its media,
        talks `bot_seconds`, then hangs up, `continue`s the caller into a queue or an
        extension, or makes a warm transfer in its own bridge."""
        call = self.call
        self.exten(caller, 7, "Goto", f"{ARI_CONTEXT},s,1")
        self.exten(caller, 1, "NoOp", "Asterisk AI Voice Agent", context=ARI_CONTEXT, exten="s")
        self.exten(caller, 2, "Stasis", ARI_APP)
        if caller.state != 6:
            self.newstate(caller, 6)  # POST /channels/{id}/answer
        self.stasis_bridge("BridgeCreate", 0)
        self.stasis_bridge("BridgeEnter", 1, caller)
        media = self.media_channel(caller)
        if call.session is not None:
            self.emit("UserEvent", caller.snapshot(), [
                ("UserEvent", "BotMeter"), ("signal", "start"), ("session", call.session)])
        self.t = call.ring_seconds + call.bot_seconds
        if call.signals:
            # POST /events/user/BotMeter?source=channel:<caller>, variables as JSON strings
            for fields in ((("signal", "usage"), ("module", "asr"),
                            ("quantity", fmt_seconds(call.bot_seconds)), ("unit", "seconds")),
                           (("signal", "usage"), ("module", "nlu"),
                            ("quantity", str(NLU_REQUESTS)), ("unit", "requests"))):
                self.emit("UserEvent", caller.snapshot(), [("UserEvent", "BotMeter"), *fields])
        if call.outcome == "handled":
            self.bot_hangs_up(caller, phone, media)
        elif call.handoff == "warm":
            self.warm_transfer(caller, phone, media)
        else:
            # POST /channels/{id}/continue: out of the bridge and into the dialplan
            self.stasis_bridge("BridgeLeave", 1, caller)
            context, exten = ARI_QUEUE if call.handoff == "queue" else ARI_EXTEN
            caller.context, caller.exten = context, exten
            self.drop_media(media, 0)
            if call.handoff == "queue":
                self.queue(caller, phone)
            else:
                self.dial_agent(caller, phone)

    def media_channel(self, caller: _Chan) -> _Chan:
        """ExternalMedia (added to the bridge twice) or an originated AudioSocket channel."""
        call = self.call
        uid = self._uniqueid()
        if call.media == "rtp":
            name = f"UnicastRTP/127.0.0.1:{18100 + self.ids.seq % 800}-0x7f95{self.ids.seq:08x}"
        else:
            name = f"AudioSocket/127.0.0.1:18090-{self.ids.bridge_id}"
        media = _Chan(name, uid, uid, 0, MEDIA_CONTEXT, "s")
        self.emit("Newchannel", media.snapshot())
        self.exten(media, 1, "AppDial2", "(Outgoing Line)")
        self.dial("DialBegin", None, media, ("DialString", name.split("/", 1)[1]))
        self.newstate(media, 6)
        self.dial("DialEnd", None, media, ("DialStatus", "ANSWER"))
        media.linkedid = caller.linkedid
        self.stasis_bridge("BridgeEnter", 2, media)
        if call.media == "rtp":
            self.t += MEDIA_BLIP_SECONDS
            self.stasis_bridge("BridgeLeave", 1, media)
            self.stasis_bridge("BridgeEnter", 2, media)
        return media

    def drop_media(self, media: _Chan, left: int) -> None:
        self.stasis_bridge("BridgeLeave", left, media)
        self.hangup(media, 16)

    def bot_hangs_up(self, caller: _Chan, phone: _Chan | None, media: _Chan) -> None:
        """DELETE /channels/{caller}; then the bridge and the media channel."""
        self.hangup_request(caller, 16)
        self.stasis_bridge("BridgeLeave", 1, caller)
        self.drop_media(media, 0)
        self.stasis_bridge("BridgeDestroy", 0)
        self.end_caller(caller, phone, 16)

    def warm_transfer(self, caller: _Chan, phone: _Chan | None, media: _Chan) -> None:
        """Hold music on the caller; the human's leg is originated on its own linkedid and
        joins the bot's bridge once briefed (the caller never leaves Stasis)."""
        call = self.call
        self.emit("MusicOnHoldStart", caller.snapshot(), [("Class", "aava")])
        one, two = self.local_pair(WARM_AGENT, AGENT_CONTEXT, None)
        self.exten(one, 1, "AppDial2", "(Outgoing Line)")
        self.exten(two, 1, "Ringing")
        self.newstate(one, 5)
        self.dial("DialBegin", None, one, ("DialString", f"{WARM_AGENT}@{AGENT_CONTEXT}"))
        self.exten(two, 2, "Wait", fmt_seconds(AGENT_RING_SECONDS))
        if call.human_seconds is None:
            self.t += NO_ANSWER_SECONDS
            if call.hangs_up_on_hold:
                self.caller_leaves(caller, phone, 16)
                self.dial("DialEnd", None, one, ("DialStatus", "CANCEL"))
                self.hangup(two, 16)
                self.hangup(one, 16)
                self.stasis_bridge("BridgeLeave", 1, caller)
                self.drop_media(media, 0)
                self.stasis_bridge("BridgeDestroy", 0)
                self.end_caller(caller, None, 16)
                return
            # nobody answers: the bot stops the music and talks to the caller again
            self.dial("DialEnd", None, one, ("DialStatus", "NOANSWER"))
            self.hangup(two, 19)
            self.hangup(one, 19)
            self.emit("MusicOnHoldStop", caller.snapshot())
            self.t += WARM_RETURN_SECONDS
            self.bot_hangs_up(caller, phone, media)
            return
        talk = call.human_seconds
        brief = min(WARM_BRIEF_SECONDS, talk / 2)
        self.t += AGENT_RING_SECONDS
        self.human_answers(one, two)
        self.dial("DialEnd", None, one, ("DialStatus", "ANSWER"))
        self.exten(two, 3, "Wait", fmt_seconds(talk))
        self.t += brief
        self.emit("MusicOnHoldStop", caller.snapshot())
        self.stasis_bridge("BridgeLeave", 1, media)
        one.linkedid = caller.linkedid
        self.stasis_bridge("BridgeEnter", 2, one)
        self.t += talk - brief
        self.exten(two, 4, "Hangup")
        self.hangup(two, 16)
        self.stasis_bridge("BridgeLeave", 1, one)
        self.hangup(one, 16)
        self.stasis_bridge("BridgeLeave", 0, caller)
        self.stasis_bridge("BridgeDestroy", 0)
        self.hangup(media, 16)
        self.end_caller(caller, phone, 16)
