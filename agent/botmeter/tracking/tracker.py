"""Call tracking: a deterministic state machine from typed PBX events to call records.

Calls are keyed by Asterisk's linkedid; a channel whose linkedid changes moves
its call to the new id (merging two calls when the new id is already one).
Only offered calls (a channel entered an inbound context) become records.
No I/O, no clock: every time comes from the events.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar, cast

from ..pbx.events import (
    AgentConnected,
    BotSignal,
    BridgeEntered,
    BridgeLeft,
    CallerIdChanged,
    ChannelCreated,
    ChannelEvent,
    ChannelHungUp,
    ChannelSnapshot,
    DestAnswered,
    DialEnded,
    DialplanStep,
    DialStarted,
    HoldStarted,
    PbxEvent,
    QueueJoined,
    SnapshotComplete,
    SnapshotStarted,
    TransferStarted,
)
from .outcome import OutcomeFacts, decide_outcome
from .record import CallRecord, Csat, ModuleUsage, Outcome
from .rules import MAX_IN_PROGRESS, TrackingRules
from .signals import (
    CsatSignal,
    OutcomeSignal,
    Signal,
    SignalError,
    StartSignal,
    Usage,
    parse_signal,
)

Problem = Callable[[str, dict[str, object]], None]
Records = tuple[CallRecord, ...]
Handler = Callable[[PbxEvent], Records]
E = TypeVar("E", bound=PbxEvent)
NO_RECORDS: Records = ()

#: hung-up channels remembered (with their call), so late events for them are ignored and a
#: signal from one still finds its call while other channels keep it up; and the linkedids of
#: finished calls remembered, so a signal for one is refused at once (not held for a call that
#: will never be seen again)
GONE_MEMORY = 20_000
#: signals held for calls not seen yet (FastAGI can beat AMI): per call, in all, and for how
#: long after the call's first signal (a steady stream of signals does not keep them longer)
PENDING_PER_CALL = 100
#: modules one call may report usage of (a bot uses a handful: asr, nlu, tts, qa); usage of
#: further modules is dropped and reported
MAX_MODULES_PER_CALL = 32
PENDING_SIGNALS_MAX = 10_000
PENDING_SIGNAL_SECONDS = 300.0
#: problems of one kind reported between two `expire()` calls (floods of dropped data: one);
#: the rest are counted, and the count reported by the next `expire()`
REPORTS_PER_SWEEP = 50
#: answers of dialled legs not yet in any call (ARI originates: a warm transfer's human leg
#: answers on its own linkedid and joins the caller's call later), kept by count and age
ANSWERS_MAX = 10_000
ANSWER_SECONDS = 3600.0

#: applications that hand a caller to people (a call seen first in one was handed off)
HANDOFF_APPLICATIONS = frozenset({"queue", "dial"})

_CHANNEL_SUFFIX = re.compile(r"-[0-9a-f]{8}(;\d)?$")


def channel_family(channel: str) -> str:
    """A channel's name without its sequence suffix (`Local/agent1@human-agents-00000024;1`
    -> `Local/agent1@human-agents`): the transfer target a dialled channel stands for."""
    return _CHANNEL_SUFFIX.sub("", channel)


@dataclass(slots=True, eq=False)
class _Channel:
    uniqueid: str
    linkedid: str
    name: str
    call: _Call
    caller_number: str = ""
    caller_name: str = ""
    bridge: str = ""
    seen_epoch: int = 0


@dataclass(slots=True)
class _Held:
    """Signals held for a call not seen yet, since the first one's time."""

    first_ts: float
    signals: list[BotSignal] = field(default_factory=list)
    dropped: int = 0


@dataclass(slots=True, eq=False)
class _Call:
    call_id: str
    linkedid: str
    offered_at: float
    last_ts: float
    lids: list[str] = field(default_factory=list)
    live: dict[str, _Channel] = field(default_factory=dict)
    caller: _Channel | None = None
    dialed_number: str | None = None
    bot_answered_at: float | None = None
    bot_ended_at: float | None = None
    #: while the caller is with the bot, how: "context" (a bot context), "application" (a bot
    #: application such as Stasis), "bridge" (bridged with a bot channel) or "signal"
    bot_via: str = ""
    #: a bot channel left the caller's bridge then: the bot's time ends there unless it is
    #: back within `rules.rejoin_seconds` (decided at the next event of the call, or its end)
    bot_left_at: float | None = None
    #: the caller itself left the bot (dialplan or bridge) then: a handoff that follows
    #: (`continue` into Queue or Dial) starts at that moment
    exit_at: float | None = None
    transferred_at: float | None = None
    transfer_target: str | None = None
    human_answered_at: float | None = None
    hangup_cause: int | None = None
    ended_in_bot: bool = False
    signalled: Outcome | None = None
    signalled_target: str | None = None
    modules: dict[str, tuple[Decimal, str]] = field(default_factory=dict)  # module -> (total, unit)
    #: the caller's rating, with the tracker's count of csat signals when it came (the last wins)
    csat: tuple[int, Csat] | None = None
    #: the bot platform's session id, with the tracker's count of sessions when it came (the
    #: first one wins, also when two calls merge)
    session: tuple[int, str] | None = None
    #: where its history came from: "ami", or the recovery source ("cel") that gave any of it
    source: str = "ami"
    #: first seen in progress by a reconnect snapshot, its beginning unknown
    joined_late: bool = False

    @property
    def in_bot(self) -> bool:
        return bool(self.bot_via)


class CallTracker:
    """Feed events in order; get finished call records back.

    Memory is bounded whatever the PBX or the bot send: calls in progress (`max_in_progress`,
    the oldest is closed at its last event), signals held for calls not seen yet (per call, in
    all, and by age), hung-up channels remembered. What is thrown away is reported through
    `on_problem` (a few per kind between two `expire()` calls, then a count) and counted in
    `evicted_calls` and `dropped_signals`.
    """

    def __init__(self, rules: TrackingRules, *, on_problem: Problem | None = None,
                 source: str = "ami", max_in_progress: int = MAX_IN_PROGRESS,
                 pending_per_call: int = PENDING_PER_CALL,
                 pending_max: int = PENDING_SIGNALS_MAX) -> None:
        if min(max_in_progress, pending_per_call, pending_max) < 1:
            raise ValueError("tracking limits must be >= 1")
        self.rules = rules
        #: the source of the events fed now: stamped on every call they touch (a recovery
        #: sets it to "cel" while it feeds Asterisk's own records, then back)
        self.source = source
        self._default_source = source
        self.max_in_progress = max_in_progress
        self.pending_per_call = pending_per_call
        self.pending_max = pending_max
        self._on_problem = on_problem or (lambda _msg, _ctx: None)
        self._calls: dict[str, _Call] = {}  # every linkedid a live call has had
        self._live: dict[_Call, None] = {}  # calls in progress, oldest first
        self._channels: dict[str, _Channel] = {}
        self._bridges: dict[str, set[str]] = {}
        self._gone: OrderedDict[str, str] = OrderedDict()  # hung-up uniqueid -> its call_id
        #: finished call's linkedid -> (its call_id, its end)
        self._ended: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._csats = 0  # csat signals applied: orders ratings, so that the last one wins
        self._sessions = 0  # session ids kept: orders them, so that the first one wins
        self._answers: OrderedDict[str, float] = OrderedDict()  # dialled leg uniqueid -> answer
        self._pending: OrderedDict[str, _Held] = OrderedDict()  # by first signal, oldest first
        self._held = 0  # signals in _pending
        self._reports: dict[str, list[int]] = {}  # problem -> [seen, limit] since the last expire()
        self._closed: list[CallRecord] = []  # calls closed to make room, returned by feed()
        self._epoch = 0
        #: the latest event's time on Asterisk's clock (`on_pbx_clock`): the recovery
        #: checkpoint is compared with Asterisk's own records
        self.latest_ts = 0.0
        self.evicted_calls = 0
        self.dropped_signals = 0
        #: calls whose bot answered by a usage or outcome signal: nothing in the call flow
        #: matched the [bot] settings (reported once per tracker, counted here)
        self.answered_by_signal = 0
        self._handlers: dict[type, Handler] = dict((
            _on(ChannelCreated, self._created),
            _on(DialplanStep, self._step),
            _on(CallerIdChanged, self._caller_id),
            _on(DialStarted, self._dial_started),
            _on(DialEnded, self._dial_ended),
            _on(DestAnswered, self._dest_answered),
            _on(HoldStarted, self._hold_started),
            _on(QueueJoined, self._queue_joined),
            _on(AgentConnected, self._agent_connected),
            _on(BridgeEntered, self._bridge_entered),
            _on(BridgeLeft, self._bridge_left),
            _on(TransferStarted, self._transfer),
            _on(ChannelHungUp, self._hung_up),
            _on(BotSignal, self._signal),
            _on(ChannelSnapshot, self._snapshot),
            _on(SnapshotStarted, self._snapshot_started),
            _on(SnapshotComplete, self._snapshot_complete),
        ))

    # -- public -----------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return len(self._live)

    def is_live(self, linkedid: str) -> bool:
        """Whether a call in progress has this linkedid (now or before)."""
        return linkedid in self._calls

    def has_ended(self, linkedid: str) -> bool:
        """Whether a call this tracker finished had this linkedid (the last `GONE_MEMORY`)."""
        return linkedid in self._ended

    def oldest_offered(self) -> float | None:
        """When the earliest call in progress was offered (None: no call in progress)."""
        return min((call.offered_at for call in self._live), default=None)

    @property
    def pending_signals(self) -> int:
        """Signals held for calls not seen yet."""
        return self._held

    def feed(self, event: PbxEvent) -> tuple[CallRecord, ...]:
        """Apply one event; return the calls it finished (usually none)."""
        handler = self._handlers.get(type(event))
        if handler is None:
            return NO_RECORDS
        if event.ts > self.latest_ts and on_pbx_clock(event):
            self.latest_ts = event.ts
        records = handler(event)
        if self._closed:
            records, self._closed = (*self._closed, *records), []
        return records

    def expire(self, now: float, idle_seconds: float) -> tuple[CallRecord, ...]:
        """Finish calls that saw no event for `idle_seconds` (lost hangups), ending them at their last event."""
        stale = [c for c in self._live if now - c.last_ts > idle_seconds]
        records: list[CallRecord] = []
        for call in stale:
            self._report("call expired without hangup",
                         {"call_id": call.call_id, "linkedid": call.linkedid})
            for chan in list(call.live.values()):
                self._forget_channel(chan)
            records.extend(self._finish(call, call.last_ts))
        cutoff = now - PENDING_SIGNAL_SECONDS
        for key in [k for k, held in self._pending.items() if held.first_ts < cutoff]:
            self._drop_pending(key, f"no call seen within {PENDING_SIGNAL_SECONDS:.0f}s")
        self._flush_reports()
        return tuple(records)

    def forget(self, linkedids: Iterable[str]) -> int:
        """Drop the calls in progress that have any of `linkedids`, with no record, what is
        remembered of their hung-up channels, and the bot signals held for them (a call not
        seen yet): their whole history, signals included, is about to be fed again (from
        Asterisk's CEL, after a gap). Returns how many calls were dropped."""
        linkedids = list(linkedids)
        for lid in linkedids:
            held = self._pending.pop(lid, None)
            if held is not None:
                self._held -= len(held.signals)
        calls = {call for lid in linkedids if (call := self._calls.get(lid)) is not None}
        ids = {call.call_id for call in calls}
        for call in calls:
            for chan in list(call.live.values()):
                if chan.bridge:
                    self._leave_bridge(chan)
                self._channels.pop(chan.uniqueid, None)
            call.live.clear()
            for lid in call.lids:
                if self._calls.get(lid) is call:
                    del self._calls[lid]
            self._live.pop(call, None)
        if ids:
            for uid in [u for u, cid in self._gone.items() if cid in ids]:
                del self._gone[uid]
        return len(calls)

    def end_of_input(self) -> None:
        """No more events will come (a replay's end, the agent's stop): signals still held for
        a call never seen are dropped and reported, and so is what the rate limit held back."""
        for key in list(self._pending):
            self._drop_pending(key, "input ended before their call was seen")
        self._flush_reports()

    def _flush_reports(self) -> None:
        reports, self._reports = self._reports, {}
        for message, seen in reports.items():
            if seen[0] > seen[1]:
                self._on_problem(f"{message} (more of the same)", {"not_logged": seen[0] - seen[1]})

    def _report(self, message: str, context: dict[str, object],
                limit: int = REPORTS_PER_SWEEP) -> None:
        """A problem, reported unless this kind was reported `limit` times since the last expire()."""
        seen = self._reports.setdefault(message, [0, limit])
        seen[0] += 1
        if seen[0] <= limit:
            self._on_problem(message, context)

    # -- channels and calls -------------------------------------------------------

    def _channel(self, ev: ChannelEvent, name: str = "") -> _Channel | None:
        """The event's channel: known, or created lazily (events for channels never seen)."""
        chan = self._channels.get(ev.uniqueid)
        if chan is not None:
            if ev.linkedid and ev.linkedid != chan.linkedid:
                self._relink(chan, ev.linkedid)
            chan.seen_epoch = self._epoch
            mine = chan.call
            mine.last_ts = max(mine.last_ts, ev.ts)
            if self.source != self._default_source:
                mine.source = self.source
            if mine.bot_left_at is not None and ev.ts - mine.bot_left_at > self.rules.rejoin_seconds:
                self._leave_bot(mine, mine.bot_left_at)  # the bot did not come back in time
            return chan
        if not ev.linkedid or ev.uniqueid in self._gone:
            return None
        call = self._calls.get(ev.linkedid)
        if call is None:
            call = self._new_call(ev.linkedid, ev.ts)
            # first seen after it began (AMI away, a heal that failed): its start is unknown
            call.joined_late = not isinstance(ev, ChannelCreated | ChannelSnapshot)
        elif self.source != self._default_source:
            call.source = self.source
        chan = _Channel(ev.uniqueid, ev.linkedid, name, call, seen_epoch=self._epoch)
        self._channels[ev.uniqueid] = chan
        call.live[ev.uniqueid] = chan
        call.last_ts = max(call.last_ts, ev.ts)
        return chan

    def _new_call(self, linkedid: str, ts: float) -> _Call:
        call = _Call(call_id=linkedid, linkedid=linkedid, offered_at=ts, last_ts=ts, lids=[linkedid],
                     source=self.source)
        self._calls[linkedid] = call
        self._live[call] = None
        if len(self._live) > self.max_in_progress:
            self._evict_oldest()
        self._attach_held(call, linkedid)
        return call

    def _evict_oldest(self) -> None:
        """Too many calls in progress (lost hangups?): close the oldest at its last event."""
        call = next(iter(self._live))
        self.evicted_calls += 1
        self._report(f"call closed: more than {self.max_in_progress} calls in progress "
                     "(lost hangups?); the oldest is closed at its last event",
                     {"call_id": call.call_id, "linkedid": call.linkedid,
                      "closed_so_far": self.evicted_calls}, limit=1)
        for chan in list(call.live.values()):
            self._forget_channel(chan)
        self._closed.extend(self._finish(call, call.last_ts))

    def _relink(self, chan: _Channel, linkedid: str) -> None:
        """The channel's linkedid changed: its call follows, merging into a call of that id."""
        chan.linkedid = linkedid
        call = chan.call
        other = self._calls.get(linkedid)
        if other is call:
            return
        if other is None:
            call.linkedid = linkedid
            call.lids.append(linkedid)
            self._calls[linkedid] = call
            self._attach_held(call, linkedid)
            return
        self._merge(call, other)

    def _merge(self, a: _Call, b: _Call) -> None:
        """Two calls turned out to be one: keep the offered (else older) one, fold in the other."""
        keep, fold = (a, b) if (a.caller and not b.caller) or (
            bool(a.caller) == bool(b.caller) and a.offered_at <= b.offered_at) else (b, a)
        for chan in fold.live.values():
            chan.call = keep
            keep.live[chan.uniqueid] = chan
        self._live.pop(fold, None)
        for lid in fold.lids:
            self._calls[lid] = keep
            keep.lids.append(lid)
        keep.linkedid = b.linkedid  # the id Asterisk now uses
        keep.offered_at = min(keep.offered_at, fold.offered_at)
        keep.last_ts = max(keep.last_ts, fold.last_ts)
        for name in ("bot_answered_at", "transferred_at", "human_answered_at"):
            if getattr(keep, name) is None:
                setattr(keep, name, getattr(fold, name))
        if keep.caller is None:
            keep.caller, keep.dialed_number = fold.caller, fold.dialed_number
        keep.signalled = keep.signalled or fold.signalled
        if fold.csat is not None and (keep.csat is None or fold.csat[0] > keep.csat[0]):
            keep.csat = fold.csat  # the later rating
        keep.transfer_target = keep.transfer_target or fold.transfer_target
        if fold.session is not None:
            self._keep_session(keep, fold.session)
        if fold.source != self._default_source:
            keep.source = fold.source
        keep.joined_late = keep.joined_late and fold.joined_late
        for module, (qty, unit) in fold.modules.items():
            self._add_usage(keep, Usage(module, qty, unit))

    def _forget_channel(self, chan: _Channel) -> None:
        self._channels.pop(chan.uniqueid, None)
        chan.call.live.pop(chan.uniqueid, None)
        if chan.bridge:
            self._leave_bridge(chan)
        self._gone[chan.uniqueid] = chan.call.call_id
        self._answers.pop(chan.uniqueid, None)
        if len(self._gone) > GONE_MEMORY:
            self._gone.popitem(last=False)

    def _finish(self, call: _Call, ended_at: float) -> tuple[CallRecord, ...]:
        self._live.pop(call, None)
        ended_at = max(ended_at, call.last_ts)  # never before the call's last event (clock skew)
        ended = self._ended
        for lid in call.lids:
            if self._calls.get(lid) is call:
                del self._calls[lid]
            ended.pop(lid, None)
            ended[lid] = (call.call_id, ended_at)
        while len(ended) > GONE_MEMORY:
            ended.popitem(last=False)
        if call.caller is None:
            return NO_RECORDS
        if call.in_bot:
            self._leave_bot(call, ended_at)
        return (self._record(call, ended_at),)

    def _record(self, call: _Call, ended_at: float) -> CallRecord:
        caller = call.caller
        assert caller is not None
        outcome = decide_outcome(OutcomeFacts(
            bot_answered=call.bot_answered_at is not None,
            handoff_started=call.transferred_at is not None,
            ended_in_bot=call.ended_in_bot,
            hangup_cause=call.hangup_cause,
            signalled=call.signalled,
        ))
        human = call.human_answered_at if outcome == "transferred" else None
        return CallRecord(
            call_id=call.call_id,
            linkedid=call.linkedid,
            caller_number=caller.caller_number or None,
            caller_name=caller.caller_name,
            dialed_number=call.dialed_number,
            offered_at=call.offered_at,
            bot_answered_at=call.bot_answered_at,
            bot_ended_at=call.bot_ended_at,
            transferred_at=call.transferred_at,
            human_answered_at=human,
            ended_at=ended_at,
            outcome=outcome,
            transfer_target=(call.signalled_target or call.transfer_target)
            if outcome == "transferred" else None,
            hangup_cause=call.hangup_cause,
            modules={m: ModuleUsage(q, u) for m, (q, u) in call.modules.items()},
            csat=None if call.csat is None else call.csat[1],
            bot_session_id=None if call.session is None else call.session[1],
            source=call.source,
            joined_late=call.joined_late,
        )

    # -- bot and handoff ---------------------------------------------------------

    def _answer(self, call: _Call, ts: float, via: str) -> None:
        if call.bot_answered_at is None:
            call.bot_answered_at = max(ts, call.offered_at)  # a signal may beat the AMI clock
            call.bot_via = via

    def _leave_bot(self, call: _Call, ts: float, *, exit: bool = False) -> None:
        """The caller stops being with the bot at `ts` (or earlier, when the bot's channel
        had already left the bridge); `exit`: the caller itself left the bot."""
        if call.bot_via:
            if call.bot_left_at is not None:
                ts = min(ts, call.bot_left_at)
            call.bot_via = ""
            call.bot_ended_at = ts
            if exit:
                call.exit_at = ts
        call.bot_left_at = None

    def _handoff(self, call: _Call, ts: float, target: str) -> None:
        if call.bot_answered_at is None:
            return
        if call.transferred_at is None:
            # a caller that left the bot into Queue or Dial (an ARI `continue`) was handed
            # off when it left
            call.transferred_at = ts if call.in_bot or call.exit_at is None else call.exit_at
            call.transfer_target = target or None
        self._leave_bot(call, ts)

    def _human_answered(self, call: _Call, ts: float) -> None:
        if call.transferred_at is not None and call.human_answered_at is None:
            call.human_answered_at = ts

    # -- event handlers ----------------------------------------------------------

    def _created(self, ev: ChannelCreated) -> tuple[CallRecord, ...]:
        chan = self._channel(ev, ev.channel)
        if chan is not None:
            chan.name = ev.channel
            chan.caller_number, chan.caller_name = ev.caller_number, ev.caller_name
        return NO_RECORDS

    def _step(self, ev: DialplanStep) -> tuple[CallRecord, ...]:
        chan = self._channel(ev, ev.channel)
        if chan is None:
            return NO_RECORDS
        self._at_dialplan(chan, ev.ts, ev.context, ev.exten, ev.application, ev.app_data)
        return NO_RECORDS

    def _at_dialplan(self, chan: _Channel, ts: float, context: str, exten: str,
                     application: str, app_data: str) -> None:
        call = chan.call
        rules = self.rules
        if call.caller is None:
            if rules.is_inbound(context, exten):
                call.caller = chan
                call.dialed_number = exten or None
            elif (call.joined_late and chan.uniqueid == call.linkedid
                  and rules.is_bot_step(context, application, app_data)):
                call.caller = chan  # with the bot, its inbound steps missed: it is the caller
        if chan is not call.caller:
            return
        with_bot = rules.is_bot_step(context, application, app_data)
        if with_bot:
            if call.bot_answered_at is None:
                self._answer(call, ts, "context" if context in rules.bot_contexts
                             else "application")
        elif call.bot_via in ("context", "application"):
            # leaving a bot application (an ARI bot's `continue`) hands off at once; a bot
            # context's dialplan may do more before it queues or dials
            self._leave_bot(call, ts, exit=call.bot_via == "application")

    def _caller_id(self, ev: CallerIdChanged) -> tuple[CallRecord, ...]:
        chan = self._channel(ev)
        if chan is not None:
            chan.caller_number, chan.caller_name = ev.caller_number, ev.caller_name
        return NO_RECORDS

    def _dial_started(self, ev: DialStarted) -> tuple[CallRecord, ...]:
        chan = self._channel(ev)
        if chan is not None and not self.rules.is_bot_channel(ev.dest_channel):
            self._handoff(chan.call, ev.ts, channel_family(ev.dest_channel))
        return NO_RECORDS

    def _dial_ended(self, ev: DialEnded) -> tuple[CallRecord, ...]:
        chan = self._channel(ev)
        if chan is not None and ev.status == "ANSWER" and not self.rules.is_bot_channel(ev.dest_channel):
            self._human_answered(chan.call, ev.ts)
        return NO_RECORDS

    def _dest_answered(self, ev: DestAnswered) -> tuple[CallRecord, ...]:
        """A leg dialled by no channel (ARI originate) answered: remember when, bounded, for
        when it joins a call (a warm transfer's human enters the bot's bridge)."""
        answers = self._answers
        answers.pop(ev.dest_uniqueid, None)
        answers[ev.dest_uniqueid] = ev.ts
        while answers and (len(answers) > ANSWERS_MAX
                           or ev.ts - next(iter(answers.values())) > ANSWER_SECONDS):
            answers.popitem(last=False)
        return NO_RECORDS

    def _hold_started(self, ev: HoldStarted) -> tuple[CallRecord, ...]:
        """The bot puts the caller on hold: an ARI bot starting a warm transfer. Only for a
        bot met as an application (Stasis) or in a bridge: a bot context may play hold music
        itself while it works."""
        chan = self._channel(ev)
        if chan is not None and chan is chan.call.caller and chan.call.bot_via in (
                "application", "bridge"):
            self._handoff(chan.call, ev.ts, "")
        return NO_RECORDS

    def _queue_joined(self, ev: QueueJoined) -> tuple[CallRecord, ...]:
        chan = self._channel(ev)
        if chan is not None:
            self._handoff(chan.call, ev.ts, ev.queue)
        return NO_RECORDS

    def _agent_connected(self, ev: AgentConnected) -> tuple[CallRecord, ...]:
        chan = self._channel(ev)
        if chan is not None:
            self._human_answered(chan.call, ev.ts)
        return NO_RECORDS

    def _transfer(self, ev: TransferStarted) -> tuple[CallRecord, ...]:
        chan = self._channel(ev)
        if chan is not None:
            self._handoff(chan.call, ev.ts, ev.target)
        return NO_RECORDS

    def _bridge_entered(self, ev: BridgeEntered) -> tuple[CallRecord, ...]:
        chan = self._channel(ev, ev.channel)
        if chan is None or not ev.bridge_id:
            return NO_RECORDS
        if ev.channel:
            chan.name = ev.channel
        if chan.bridge and chan.bridge != ev.bridge_id:
            self._leave_bridge(chan)
        chan.bridge = ev.bridge_id
        members = self._bridges.setdefault(ev.bridge_id, set())
        members.add(chan.uniqueid)
        self._check_bridge(ev.bridge_id, members, ev.ts)
        return NO_RECORDS

    def _check_bridge(self, bridge_id: str, members: set[str], ts: float) -> None:
        """A caller bridged with a bot channel is with the bot; after a handoff, with a person is answered."""
        rules = self.rules
        chans = [self._channels[u] for u in members if u in self._channels]
        for caller in chans:
            call = caller.call
            if caller is not call.caller:
                continue
            others = [c for c in chans if c is not caller]
            if any(rules.is_bot_channel(c.name) for c in others):
                if call.bot_answered_at is None:
                    self._answer(call, ts, "bridge")
                call.bot_left_at = None  # the bot's channel is back in time (a media blip)
                continue
            people = [c for c in others if rules.is_person(c.name)]
            if not people:
                continue
            if call.in_bot:
                # a person joins the caller in the bot's own bridge: a warm transfer the
                # bot did not announce by putting the caller on hold
                self._handoff(call, ts, "")
            if call.transferred_at is not None:
                person = people[0]
                if call.transfer_target is None:
                    call.transfer_target = channel_family(person.name) or None
                answered = self._answers.pop(person.uniqueid, ts)
                self._human_answered(call, max(answered, call.transferred_at))

    def _bridge_left(self, ev: BridgeLeft) -> tuple[CallRecord, ...]:
        chan = self._channels.get(ev.uniqueid)
        if chan is not None and chan.bridge == ev.bridge_id:
            self._channel(ev)
            self._leave_bridge(chan, ev.ts)
        return NO_RECORDS

    def _leave_bridge(self, chan: _Channel, ts: float | None = None) -> None:
        members = self._bridges.get(chan.bridge)
        bridge, chan.bridge = chan.bridge, ""
        if members is None:
            return
        members.discard(chan.uniqueid)
        if ts is not None:
            # the caller left a bot bridge: the bot session ends; the bot's channel left:
            # it ends unless that channel (or another bot channel) is back within
            # rejoin_seconds (ExternalMedia channels are added to the bridge twice)
            rules = self.rules
            for uid in (*members, chan.uniqueid):
                peer = self._channels.get(uid)
                if peer is None or peer.call.bot_via != "bridge" or peer is not peer.call.caller:
                    continue
                if peer is chan:
                    self._leave_bot(peer.call, ts, exit=True)
                elif rules.is_bot_channel(chan.name) and not any(
                        rules.is_bot_channel(self._channels[u].name)
                        for u in members if u in self._channels):
                    if rules.rejoin_seconds > 0:
                        if peer.call.bot_left_at is None:
                            peer.call.bot_left_at = ts
                    else:
                        self._leave_bot(peer.call, ts)
        if not members:
            del self._bridges[bridge]

    def _hung_up(self, ev: ChannelHungUp) -> tuple[CallRecord, ...]:
        chan = self._channels.get(ev.uniqueid)
        if chan is None:
            return NO_RECORDS  # a duplicate, or a channel never seen: nothing to end
        self._channel(ev)
        call = chan.call
        if chan is call.caller:
            call.hangup_cause = ev.cause
            if call.in_bot:
                call.ended_in_bot = call.bot_left_at is None  # else the bot had left first
                self._leave_bot(call, ev.ts)
        elif call.bot_via == "bridge" and chan.bridge and self.rules.is_bot_channel(chan.name):
            self._leave_bot(call, ev.ts)
        self._forget_channel(chan)
        if call.live:
            return NO_RECORDS
        return self._finish(call, ev.ts)

    # -- signals -----------------------------------------------------------------

    def _signal(self, sig: BotSignal) -> tuple[CallRecord, ...]:
        call = self._call_of(sig)
        if call is not None:
            call.last_ts = max(call.last_ts, sig.ts)
        try:
            meaning = parse_signal(sig.signal, sig.fields)
        except SignalError as exc:
            self._report("malformed bot signal ignored", {
                "reason": str(exc), **_call_ids(call, sig.linkedid), "via": sig.via})
            return NO_RECORDS
        if isinstance(meaning, StartSignal) and meaning.dropped:
            self._report("bot session id dropped: the start signal counts without it", {
                "reason": meaning.dropped, **_call_ids(call, sig.linkedid), "via": sig.via})
        if call is not None:
            self._apply(call, sig, meaning)
            return NO_RECORDS
        key = sig.linkedid or sig.uniqueid
        if not key:
            self._report("bot signal for no call (no linkedid)", {"signal": sig.signal})
            return NO_RECORDS
        ended = self._ended_call(sig)
        if ended is not None:
            # its call's record is written: a signal cannot change it, and the call will not
            # be seen again, so it is not held either
            self.dropped_signals += 1
            self._report("bot signal ignored: its call has ended and its record is written", {
                "call_id": ended[0], "linkedid": key, "signal": sig.signal, "via": sig.via,
                "seconds_after_end": round(max(0.0, sig.ts - ended[1]), 3)})
            return NO_RECORDS
        self._hold(key, sig)
        return NO_RECORDS

    def _call_of(self, sig: BotSignal) -> _Call | None:
        """The live call a signal is for: that of its channel, else of its linkedid, else, for
        a channel that has hung up (the caller's, from its `h` extension or just after) while
        other channels keep the call up, the call that channel was in."""
        chan = self._channels.get(sig.uniqueid) if sig.uniqueid else None
        if chan is not None:
            return chan.call
        call = self._calls.get(sig.linkedid) if sig.linkedid else None
        if call is None and sig.uniqueid:
            call_id = self._gone.get(sig.uniqueid)
            if call_id is not None:
                call = self._calls.get(call_id)
        return call

    def _ended_call(self, sig: BotSignal) -> tuple[str, float] | None:
        """The signal's call's id and end, if it is a call that has ended (and is remembered)."""
        for lid in (sig.linkedid, self._gone.get(sig.uniqueid) if sig.uniqueid else None):
            if lid and lid in self._ended:
                return self._ended[lid]
        return None

    def _hold(self, key: str, sig: BotSignal) -> None:
        """Keep a valid signal until its call appears, within the per-call and total caps."""
        held = self._pending.get(key)
        if held is not None and sig.ts - held.first_ts > PENDING_SIGNAL_SECONDS:
            self._drop_pending(key, f"no call seen within {PENDING_SIGNAL_SECONDS:.0f}s")
            held = None
        if held is None:
            held = self._pending[key] = _Held(sig.ts)
        if len(held.signals) >= self.pending_per_call:
            held.dropped += 1
            self.dropped_signals += 1
            if held.dropped == 1:
                self._report(f"bot signal dropped: more than {self.pending_per_call} signals "
                             "for a call not seen yet", {"linkedid": key, "via": sig.via}, limit=1)
            return
        held.signals.append(sig)
        self._held += 1
        while self._held > self.pending_max:
            self._drop_pending(next(iter(self._pending)),
                               f"more than {self.pending_max} signals held for calls not seen yet")

    def _drop_pending(self, key: str, why: str) -> None:
        held = self._pending.pop(key)
        self._held -= len(held.signals)
        self.dropped_signals += len(held.signals)
        self._report(f"bot signal dropped: {why}", {
            "linkedid": key, "signals": len(held.signals) + held.dropped}, limit=1)

    def _attach_held(self, call: _Call, linkedid: str) -> None:
        """The call of held signals appeared: apply them."""
        held = self._pending.pop(linkedid, None)
        if held is None:
            return
        self._held -= len(held.signals)
        if held.dropped:
            self._report("call is missing bot signals dropped while it was not seen yet",
                         {"call_id": call.call_id, "linkedid": linkedid, "dropped": held.dropped})
        for sig in held.signals:
            self._apply(call, sig, parse_signal(sig.signal, sig.fields))

    def _apply(self, call: _Call, sig: BotSignal, meaning: Signal) -> None:
        if isinstance(meaning, CsatSignal):
            # the caller's rating, from a survey that may run after the bot or a human: it
            # says nothing about the bot answering or the call's flow
            self._csats += 1
            call.csat = (self._csats, Csat(meaning.score, meaning.scale))
            return
        if meaning != "end" and call.bot_answered_at is None:
            # the bot's first signal is its answer: a bot that speaks has answered
            self._answer(call, sig.ts, "signal")
            if not isinstance(meaning, StartSignal):
                self._answered_by_signal(call, sig)
        if isinstance(meaning, StartSignal):
            if meaning.session is not None:
                self._sessions += 1
                self._keep_session(call, (self._sessions, meaning.session))
        elif meaning == "end":
            self._leave_bot(call, sig.ts)
        elif isinstance(meaning, Usage):
            self._add_usage(call, meaning)
        elif isinstance(meaning, OutcomeSignal):
            call.signalled = meaning.outcome  # type: ignore[assignment]
            call.signalled_target = meaning.target or call.signalled_target
            if meaning.outcome == "transferred":
                self._handoff(call, sig.ts, meaning.target or "")

    def _keep_session(self, call: _Call, session: tuple[int, str]) -> None:
        """The call's session id is the first its bot named; another one later (a second
        `start`, or a call merged in) is reported and not kept."""
        if call.session is None:
            call.session = session
            return
        first, other = sorted((call.session, session))
        call.session = first
        if first[1] != other[1]:
            self._report("bot session id ignored: the call's bot named another one first", {
                "call_id": call.call_id, "linkedid": call.linkedid, "kept": first[1],
                "ignored": other[1]})

    def _answered_by_signal(self, call: _Call, sig: BotSignal) -> None:
        """A usage or outcome signal came before any sign that the bot answered: the [bot]
        settings do not recognise the bot. Counted per call, reported once per tracker."""
        self.answered_by_signal += 1
        if self.answered_by_signal == 1:
            self._on_problem(
                "the bot signalled before any sign that it answered: [bot] contexts, "
                "applications and channels do not recognise it; each such call is taken as "
                "answered at the bot's first signal (reported once)",
                {"call_id": call.call_id, "linkedid": call.linkedid, "signal": sig.signal,
                 "via": sig.via})

    def _add_usage(self, call: _Call, usage: Usage) -> None:
        entry = call.modules.get(usage.module)
        if entry is None and len(call.modules) >= MAX_MODULES_PER_CALL:
            self.dropped_signals += 1
            self._report(f"usage of more than {MAX_MODULES_PER_CALL} modules on one call: "
                         "further modules dropped", {"call_id": call.call_id,
                                                     "linkedid": call.linkedid,
                                                     "module": usage.module}, limit=1)
            return
        call.modules[usage.module] = ((usage.quantity, usage.unit) if entry is None
                                      else (entry[0] + usage.quantity, entry[1]))

    # -- reconnect snapshots -----------------------------------------------------

    def _snapshot_started(self, ev: SnapshotStarted) -> tuple[CallRecord, ...]:
        self._epoch += 1
        return NO_RECORDS

    def _snapshot(self, ev: ChannelSnapshot) -> tuple[CallRecord, ...]:
        known = ev.uniqueid in self._channels
        new_call = not known and bool(ev.linkedid) and ev.linkedid not in self._calls
        chan = self._channel(ev, ev.channel)  # type: ignore[arg-type]
        if chan is None:
            return NO_RECORDS
        call = chan.call
        chan.name = ev.channel or chan.name
        first = ev.uniqueid == ev.linkedid  # the call's first channel: its caller's
        if not known:
            call.offered_at = min(call.offered_at, ev.ts - ev.duration_seconds)
            chan.caller_number, chan.caller_name = ev.caller_number, ev.caller_name
        # its start was missed: the call is new, or only its later channels (a queue's legs,
        # in the events of this very attach) were seen before its caller's
        if new_call or (not known and first and call.caller is None):
            call.joined_late = True
        self._at_dialplan(chan, ev.ts, ev.context, ev.exten, ev.application, ev.app_data)
        if call.joined_late and first and call.transferred_at is None:
            self._join_late(call, chan, ev)
        if ev.bridge_id and chan.bridge != ev.bridge_id:
            self._bridge_entered(BridgeEntered(ev.ts, ev.uniqueid, ev.linkedid, ev.channel, ev.bridge_id))
        return NO_RECORDS

    def _join_late(self, call: _Call, chan: _Channel, ev: ChannelSnapshot) -> None:
        """A call first seen in progress, its first channel with the bot (a bot step), or
        already handed off by it (in Queue or Dial, in the inbound context, as the lab's
        dialplan queues, or in the bot's; in another, a Dial is an internal call's). It was
        offered to the bot when it began; the bot's time counts from now, as nothing says
        when it answered."""
        rules = self.rules
        offered = call.caller is chan or ev.context in rules.bot_contexts  # not an internal call
        handing_off = offered and ev.application.lower() in HANDOFF_APPLICATIONS
        if not handing_off and not rules.is_bot_step(ev.context, ev.application, ev.app_data):
            return
        call.caller = chan
        if handing_off:
            self._answer(call, ev.ts, "signal")
            target = ev.app_data.split(",", 1)[0]
            self._handoff(call, ev.ts, target if ev.application.lower() == "queue" else
                          _CHANNEL_SUFFIX.sub("", target))
        else:
            self._at_dialplan(chan, ev.ts, ev.context, ev.exten, ev.application, ev.app_data)

    def _snapshot_complete(self, ev: SnapshotComplete) -> tuple[CallRecord, ...]:
        """Channels not confirmed since the snapshot began hung up while we were away: their
        calls end now (the hangup's time is not known)."""
        records: list[CallRecord] = []
        gone = [c for c in self._channels.values() if c.seen_epoch < self._epoch]
        for chan in gone:
            if chan.uniqueid in self._channels:
                ended = self._hung_up(ChannelHungUp(ev.ts, chan.uniqueid, "", chan.name, None))
                for record in ended:
                    self._report("call closed at reconnect: its channels were gone when the "
                                 "agent attached again; it ends then, as its hangup was not seen",
                                 {"call_id": record.call_id, "linkedid": record.linkedid})
                records.extend(ended)
        return tuple(records)


def on_pbx_clock(event: PbxEvent) -> bool:
    """Whether the event's time is Asterisk's (its `Timestamp`, a CEL row's time), not the
    agent's: the agent stamps the start of a reconnect's snapshot, and the FastAGI signals
    it receives, with its own clock."""
    if isinstance(event, SnapshotStarted):
        return False
    return not (isinstance(event, BotSignal) and event.via == "fastagi")


def _on(kind: type[E], handler: Callable[[E], Records]) -> tuple[type, Handler]:
    """A handler table entry: `handler` takes the events of type `kind` (checked here, so the
    table's one cast is safe: `feed` looks handlers up by the event's exact type)."""
    return kind, cast(Handler, handler)


def _call_ids(call: _Call | None, linkedid: str) -> dict[str, object]:
    """A problem's identifiers: the call's id and linkedid, or the linkedid alone when there is
    no call (yet)."""
    if call is None:
        return {"linkedid": linkedid}
    return {"call_id": call.call_id, "linkedid": call.linkedid}
