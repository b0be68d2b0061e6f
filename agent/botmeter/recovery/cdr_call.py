"""One call's record from its CDRs: the fallback where Asterisk keeps no CEL.

Pure. A CDR says, per channel pair: start, answer and end (whole seconds), the last
application and its data, the channel dialled, the disposition. That is less than CEL shows,
so a CDR record is the best reading of that, and says so (`source = "cdr"`):

- the caller is the channel of the first CDR in an inbound context (or to an inbound number);
  the call was offered at its start and ended at the last end of any of the call's CDRs;
- the bot answered when the caller's channel was answered (a CDR does not show where the call
  went between its answer and a handoff; botmeter meters the calls its bot is offered);
- a handoff is a caller CDR whose last application is `Queue` or `Dial` (to no `[bot]
  channels` channel), or a leg of the call other than the caller's own channels, the bot's
  (`[bot]` channels and contexts) and media channels; it started when the first such leg did
  (else at that CDR's start);
- the human answered when the leg the caller was connected to (`ANSWERED`, to a person's
  channel) answered;
- the hangup cause is the caller's `Hangup(<cause>)` (`Hangup()`: 16), else unknown;
- no bot signals, so no module usage and no satisfaction rating.

The outcome is decided from these facts by `tracking.outcome.decide_outcome`, as for every
record. What it cannot tell: an originated Local channel is up before it runs the dialplan, so
its CDR shows it answered at once (the lab's test calls: abandoned ones look handled, and the
ring counts as bot time); a bot that hands off by a transfer (not Queue or Dial) is not seen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..pbx.events import MAX_CAUSE, caller_id_text
from ..tracking.outcome import OutcomeFacts, decide_outcome
from ..tracking.record import CallRecord
from ..tracking.rules import TrackingRules
from ..tracking.tracker import channel_family

HANDOFF_APPS = ("queue", "dial")
#: Hangup() without a cause hangs up with normal clearing
NORMAL_CLEARING = 16
_CLID = re.compile(r'^\s*"?(?P<name>.*?)"?\s*<(?P<number>[^>]*)>\s*$')


@dataclass(frozen=True, slots=True)
class CdrRow:
    """One CDR, by the names of Asterisk's CDR variables. Times are UTC epoch seconds;
    `sequence` orders the CDRs of one channel (its position in the file where the file has no
    sequence column); `where` says where the row is, for reports."""

    start: float
    answer: float | None
    end: float
    channel: str
    dcontext: str
    dst: str
    uniqueid: str = ""
    linkedid: str = ""
    clid: str = ""
    src: str = ""
    dstchannel: str = ""
    lastapp: str = ""
    lastdata: str = ""
    disposition: str = ""
    sequence: int = 0
    where: str = ""


def local_stem(channel: str) -> str:
    """A Local channel's name without its `;1`/`;2` half: both halves are one channel pair."""
    base, sep, half = channel.rpartition(";")
    return base if sep and half in ("1", "2") else channel


def _order(row: CdrRow) -> tuple[float, int]:
    return row.start, row.sequence


def caller_rows(rows: Sequence[CdrRow], rules: TrackingRules) -> list[CdrRow]:
    """The CDRs of the call's caller channel, in order; [] when none is in an inbound context."""
    inbound = [r for r in rows if rules.is_inbound(r.dcontext, r.dst)]
    if not inbound:
        return []
    first = min(inbound, key=_order)
    return sorted((r for r in rows if r.channel == first.channel), key=_order)


def cdr_record(rows: Sequence[CdrRow], rules: TrackingRules) -> CallRecord | None:
    """The record of the call whose CDRs are `rows`; None when it was not offered (no CDR in an
    inbound context)."""
    caller = caller_rows(rows, rules)
    if not caller:
        return None
    first, last = caller[0], caller[-1]
    stem = local_stem(first.channel)
    legs = sorted((r for r in rows if local_stem(r.channel) != stem and rules.is_person(r.channel)
                   and r.dcontext not in rules.bot_contexts), key=_order)
    offered_at = first.start
    ended_at = max(r.end for r in rows)
    answers = [r.answer for r in caller if r.answer is not None]
    bot_answered_at = max(min(answers), offered_at) if answers else None
    dials = [r for r in caller if r.lastapp.lower() in HANDOFF_APPS
             and not rules.is_bot_channel(r.dstchannel)]
    transferred_at = human_answered_at = None
    target = None
    if bot_answered_at is not None and (dials or legs):
        transferred_at = max(legs[0].start if legs else dials[0].start, bot_answered_at)
        target = _target(dials[0]) if dials else channel_family(legs[0].channel)
        human_answered_at = _human_answered(caller, legs, rules, transferred_at)
    cause = _hangup_cause(last)
    outcome = decide_outcome(OutcomeFacts(
        bot_answered=bot_answered_at is not None,
        handoff_started=transferred_at is not None,
        ended_in_bot=bot_answered_at is not None and transferred_at is None,
        hangup_cause=cause,
        signalled=None,
    ))
    number, name = _caller_id(first)
    bot_ended_at = None if bot_answered_at is None else (
        transferred_at if transferred_at is not None else max(r.end for r in caller))
    return CallRecord(
        call_id=first.linkedid or first.uniqueid,
        linkedid=first.linkedid or first.uniqueid,
        caller_number=number or None,
        caller_name=name,
        dialed_number=first.dst or None,
        offered_at=offered_at,
        bot_answered_at=bot_answered_at,
        bot_ended_at=bot_ended_at,
        transferred_at=transferred_at if outcome == "transferred" else None,
        human_answered_at=human_answered_at if outcome == "transferred" else None,
        ended_at=ended_at,
        outcome=outcome,
        transfer_target=target if outcome == "transferred" else None,
        hangup_cause=cause,
        source="cdr",
    )


def _human_answered(caller: Sequence[CdrRow], legs: Sequence[CdrRow], rules: TrackingRules,
                    transferred_at: float) -> float | None:
    """When the person the caller was connected to answered (never before the handoff)."""
    connected = next((r for r in caller if r.disposition.upper() == "ANSWERED"
                      and rules.is_person(r.dstchannel)), None)
    if connected is None:
        return None
    leg = next((r for r in legs if local_stem(r.channel) == local_stem(connected.dstchannel)
                and r.answer is not None), None)
    answered = leg.answer if leg is not None else connected.answer
    return max(answered if answered is not None else transferred_at, transferred_at)


def _target(row: CdrRow) -> str | None:
    """A handoff's target: the queue, else the channel dialled (as AMI records show it)."""
    if row.lastapp.lower() == "queue":
        return row.lastdata.split(",", 1)[0].strip() or None
    return channel_family(row.dstchannel) or None


def _hangup_cause(row: CdrRow) -> int | None:
    if row.lastapp.lower() != "hangup":
        return None
    data = row.lastdata.strip()
    if not data:
        return NORMAL_CLEARING
    return int(data) if data.isdigit() and int(data) <= MAX_CAUSE else None


def _caller_id(row: CdrRow) -> tuple[str, str]:
    """(number, name) from `clid` (`"Name" <number>`), the number falling back to `src`."""
    found = _CLID.match(row.clid)
    if found is None:
        return caller_id_text(row.src), ""
    number = caller_id_text(found["number"]) or caller_id_text(row.src)
    return number, caller_id_text(found["name"])
