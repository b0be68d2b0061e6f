"""Typed PBX events: what call tracking is fed, whatever the source.

AMI frames become these in `from_ami`; FastAGI and the bot's signals become
`BotSignal`. Times are UTC epoch seconds (floats rounded to the millisecond).

Every number is checked here, at the boundary: a `Timestamp` that is not a finite time in
2000..2100 is replaced by the agent's clock, a `Cause` or `Duration` outside its sane range
becomes unknown, and each such value is reported to `on_bad_value`, so no later stage (the
tracker, SQLite) ever sees NaN, infinity or an integer it cannot hold.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .ami_frames import Headers


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """Anything that happens on one channel; carries its call's linkedid."""

    ts: float
    uniqueid: str
    linkedid: str


@dataclass(frozen=True, slots=True)
class ChannelCreated(ChannelEvent):
    channel: str
    context: str
    exten: str
    caller_number: str
    caller_name: str


@dataclass(frozen=True, slots=True)
class DialplanStep(ChannelEvent):
    """`Newexten`: the channel runs one dialplan priority."""

    channel: str
    context: str
    exten: str
    application: str
    app_data: str


@dataclass(frozen=True, slots=True)
class CallerIdChanged(ChannelEvent):
    caller_number: str
    caller_name: str


@dataclass(frozen=True, slots=True)
class DialStarted(ChannelEvent):
    """`DialBegin` from a channel of the call (originates have no source)."""

    dest_channel: str
    dest_uniqueid: str


@dataclass(frozen=True, slots=True)
class DialEnded(ChannelEvent):
    dest_channel: str
    dest_uniqueid: str
    status: str


@dataclass(frozen=True, slots=True)
class QueueJoined(ChannelEvent):
    queue: str


@dataclass(frozen=True, slots=True)
class AgentConnected(ChannelEvent):
    queue: str
    member_channel: str


@dataclass(frozen=True, slots=True)
class BridgeEntered(ChannelEvent):
    channel: str
    bridge_id: str


@dataclass(frozen=True, slots=True)
class BridgeLeft(ChannelEvent):
    channel: str
    bridge_id: str


@dataclass(frozen=True, slots=True)
class TransferStarted(ChannelEvent):
    """`BlindTransfer` / `AttendedTransfer` of a channel of the call."""

    target: str


@dataclass(frozen=True, slots=True)
class HoldStarted(ChannelEvent):
    """`MusicOnHoldStart`: the channel is put on hold (an ARI bot does this to the caller
    when it starts a warm transfer)."""

    music_class: str


@dataclass(frozen=True, slots=True)
class DestAnswered:
    """`DialEnd` ANSWER with no calling channel (an ARI originate): the dialled leg answered.

    Such a leg runs on its own linkedid until it joins a call, so it is addressed by its
    own uniqueid only."""

    ts: float
    dest_uniqueid: str
    dest_channel: str


@dataclass(frozen=True, slots=True)
class ChannelHungUp(ChannelEvent):
    channel: str
    cause: int | None


@dataclass(frozen=True, slots=True)
class BotSignal:
    """A signal from the bot (UserEvent BotMeter, FastAGI or the AGI script).

    Addressed to a call by linkedid, or by the uniqueid of one of its channels.
    """

    ts: float
    linkedid: str
    uniqueid: str
    signal: str
    fields: Mapping[str, str]
    via: str = "ami"


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    """One live channel as `CoreShowChannels` reports it after (re)connect."""

    ts: float
    uniqueid: str
    linkedid: str
    channel: str
    context: str
    exten: str
    application: str
    app_data: str
    caller_number: str
    caller_name: str
    duration_seconds: float
    bridge_id: str


@dataclass(frozen=True, slots=True)
class SnapshotStarted:
    """The agent asked for `CoreShowChannels` (after every (re)connect)."""

    ts: float


@dataclass(frozen=True, slots=True)
class SnapshotComplete:
    """All live channels were listed: tracked channels not seen since the start are gone."""

    ts: float


PbxEvent = (ChannelEvent | DestAnswered | BotSignal | ChannelSnapshot | SnapshotStarted
            | SnapshotComplete)


def caller_id_text(value: str) -> str:
    """A caller id number or name as recorded: Asterisk's `<unknown>` is ""."""
    return "" if value == "<unknown>" else value


#: printable characters AMI escapes in caller ids (Asterisk's `ast_escape_c`); escaped control
#: characters are left as written, so a name stays one line
_C_ESCAPED = re.compile(r"\\([\\'\"?])")


def ami_caller_id(value: str) -> str:
    """A caller id header of AMI as recorded: AMI escapes it C-style (`O\\'Brien`, `\\?`);
    CEL and CDRs do not, so the same name reads the same from all three."""
    if "\\" in value:
        value = _C_ESCAPED.sub(r"\1", value)
    return caller_id_text(value)


#: timestamps outside [2000-01-01, 2100-01-01) UTC are not believed
MIN_TIMESTAMP = 946_684_800.0
MAX_TIMESTAMP = 4_102_444_800.0
#: Q.850 hangup causes are 0..127 (Asterisk sends no other); a little room is left
MAX_CAUSE = 255
#: a channel up longer than a year (CoreShowChannel `Duration`) is not believed
MAX_DURATION_SECONDS = 366 * 86_400

BadValue = Callable[[str, str, str, str], None]
"""`on_bad_value(event, header, value, used_instead)`: a header value that was refused."""


def _ignore(_event: str, _header: str, _value: str, _used: str) -> None:
    return None


def _ts(h: Headers, now: float, bad: BadValue) -> float:
    raw = h.get("Timestamp")
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if MIN_TIMESTAMP <= value < MAX_TIMESTAMP:  # False for NaN
            return round(value, 3)
        bad(h.get("Event", ""), "Timestamp", raw, "the agent's clock")
    return round(now, 3)


def _cause(h: Headers, bad: BadValue) -> int | None:
    raw = h.get("Cause")
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if 0 <= value <= MAX_CAUSE:
        return value
    bad(h.get("Event", ""), "Cause", raw, "no cause")
    return None


def _duration(h: Headers, bad: BadValue) -> float:
    """`HH:MM:SS` (CoreShowChannel) to seconds; 0 when unreadable or beyond a year."""
    raw = h.get("Duration", "")
    if not raw:
        return 0.0
    try:
        parts = [int(p) for p in raw.split(":")]
    except ValueError:
        parts = [-1]
    total = 0
    for part in parts:
        total = total * 60 + part
    if min(parts) >= 0 and total <= MAX_DURATION_SECONDS:
        return float(total)
    bad(h.get("Event", ""), "Duration", raw, "0 seconds")
    return 0.0


def _new_channel(h: Headers, ts: float, uid: str, lid: str) -> ChannelEvent:
    return ChannelCreated(
        ts, uid, lid, h.get("Channel", ""), h.get("Context", ""), h.get("Exten", ""),
        ami_caller_id(h.get("CallerIDNum", "")), ami_caller_id(h.get("CallerIDName", "")),
    )


def _new_exten(h: Headers, ts: float, uid: str, lid: str) -> ChannelEvent:
    return DialplanStep(
        ts, uid, lid, h.get("Channel", ""), h.get("Context", ""),
        h.get("Exten", "") or h.get("Extension", ""),
        h.get("Application", ""), h.get("AppData", ""),
    )


def _new_callerid(h: Headers, ts: float, uid: str, lid: str) -> ChannelEvent:
    return CallerIdChanged(
        ts, uid, lid, ami_caller_id(h.get("CallerIDNum", "")), ami_caller_id(h.get("CallerIDName", ""))
    )


def _dial_begin(h: Headers, ts: float, uid: str, lid: str) -> ChannelEvent:
    return DialStarted(ts, uid, lid, h.get("DestChannel", ""), h.get("DestUniqueid", ""))


def _dial_end(h: Headers, ts: float, uid: str, lid: str) -> ChannelEvent:
    return DialEnded(
        ts, uid, lid, h.get("DestChannel", ""), h.get("DestUniqueid", ""), h.get("DialStatus", "")
    )


def _queue_join(h: Headers, ts: float, uid: str, lid: str) -> ChannelEvent:
    return QueueJoined(ts, uid, lid, h.get("Queue", ""))


def _agent_connect(h: Headers, ts: float, uid: str, lid: str) -> ChannelEvent:
    return AgentConnected(ts, uid, lid, h.get("Queue", ""), h.get("DestChannel", ""))


def _hold_start(h: Headers, ts: float, uid: str, lid: str) -> ChannelEvent:
    return HoldStarted(ts, uid, lid, h.get("Class", ""))


def _bridge_enter(h: Headers, ts: float, uid: str, lid: str) -> ChannelEvent:
    return BridgeEntered(ts, uid, lid, h.get("Channel", ""), h.get("BridgeUniqueid", ""))


def _bridge_leave(h: Headers, ts: float, uid: str, lid: str) -> ChannelEvent:
    return BridgeLeft(ts, uid, lid, h.get("Channel", ""), h.get("BridgeUniqueid", ""))


def _hangup(h: Headers, ts: float, uid: str, lid: str, bad: BadValue) -> ChannelEvent:
    return ChannelHungUp(ts, uid, lid, h.get("Channel", ""), _cause(h, bad))


_CHANNEL_EVENTS: dict[str, Callable[[Headers, float, str, str], ChannelEvent]] = {
    "Newchannel": _new_channel,
    "Newexten": _new_exten,
    "NewCallerid": _new_callerid,
    "DialBegin": _dial_begin,
    "DialEnd": _dial_end,
    "QueueCallerJoin": _queue_join,
    "AgentConnect": _agent_connect,
    "BridgeEnter": _bridge_enter,
    "BridgeLeave": _bridge_leave,
    "MusicOnHoldStart": _hold_start,
}

#: event names worth parsing at all; everything else is skipped unparsed
TRACKED_EVENTS: frozenset[bytes] = frozenset(
    n.encode() for n in (*_CHANNEL_EVENTS, "Hangup", "UserEvent", "BlindTransfer",
                         "AttendedTransfer", "CoreShowChannel", "CoreShowChannelsComplete")
)


def from_ami(h: Headers, now: float, on_bad_value: BadValue | None = None) -> PbxEvent | None:
    """The typed event for one AMI event frame, or None if tracking needs nothing from it.

    `now` is the agent's clock (for frames without a believable `Timestamp`); refused header
    values are reported to `on_bad_value`.
    """
    bad = on_bad_value or _ignore
    name = h.get("Event", "")
    if name == "Hangup":  # the one channel event with a number besides its time
        uid = h.get("Uniqueid", "")
        return _hangup(h, _ts(h, now, bad), uid, h.get("Linkedid", ""), bad) if uid else None
    build = _CHANNEL_EVENTS.get(name)
    if build is not None:
        uid = h.get("Uniqueid", "")
        if not uid:
            if name == "DialEnd" and h.get("DialStatus", "") == "ANSWER" and h.get("DestUniqueid"):
                return DestAnswered(_ts(h, now, bad), h.get("DestUniqueid", ""),
                                    h.get("DestChannel", ""))
            return None
        return build(h, _ts(h, now, bad), uid, h.get("Linkedid", ""))
    if name == "UserEvent":
        if h.get("UserEvent", "") != "BotMeter":
            return None
        # `Signal` in any case: an ARI bot's `POST /events/user/BotMeter` writes the keys of
        # its JSON `variables` as given ({"signal": "usage", ...} arrives as `signal: usage`)
        signal = next((v for k, v in h.items() if k.lower() == "signal"), "").strip().lower()
        fields = {k: v for k, v in h.items()
                  if k not in _USEREVENT_ENVELOPE and k.lower() != "signal"}
        return BotSignal(_ts(h, now, bad), h.get("Linkedid", ""), h.get("Uniqueid", ""), signal,
                         fields)
    if name in ("BlindTransfer", "AttendedTransfer"):
        uid = h.get("TransfererUniqueid", "") or h.get("OrigTransfererUniqueid", "")
        if not uid:
            return None
        target = h.get("Extension", "") or h.get("TransferTargetChannel", "") or h.get(
            "SecondTransfererChannel", "")
        lid = h.get("TransfererLinkedid", "") or h.get("OrigTransfererLinkedid", "")
        return TransferStarted(_ts(h, now, bad), uid, lid, target)
    if name == "CoreShowChannel":
        uid = h.get("Uniqueid", "")
        if not uid:
            return None
        return ChannelSnapshot(
            _ts(h, now, bad), uid, h.get("Linkedid", ""), h.get("Channel", ""),
            h.get("Context", ""), h.get("Exten", ""), h.get("Application", ""),
            h.get("ApplicationData", ""),
            ami_caller_id(h.get("CallerIDNum", "")), ami_caller_id(h.get("CallerIDName", "")),
            _duration(h, bad), h.get("BridgeId", ""),
        )
    if name == "CoreShowChannelsComplete":
        return SnapshotComplete(_ts(h, now, bad))
    return None


_USEREVENT_ENVELOPE = frozenset({
    "Event", "Privilege", "Timestamp", "Channel", "ChannelState", "ChannelStateDesc",
    "CallerIDNum", "CallerIDName", "ConnectedLineNum", "ConnectedLineName", "Language",
    "AccountCode", "Context", "Exten", "Priority", "Uniqueid", "Linkedid", "UserEvent",
    "Signal",
})
