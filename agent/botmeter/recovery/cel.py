"""CEL rows to the typed events AMI gives (`pbx/events.py`), so one tracker decides every call.

Pure: no I/O, no clock; every time comes from the rows. What a row carries is what Asterisk's
`main/cel.c` puts in it: the channel's snapshot (name, context, exten, application and its
data, caller id, uniqueid, linkedid) plus, for some event types, a JSON `eventextra`.

| CEL event | typed event |
| --- | --- |
| `CHAN_START` | `ChannelCreated`; a channel started while another of its call runs `Dial`: `DialStarted` |
| `APP_START` | `DialplanStep`; `Queue`: `QueueJoined`; `Dial`: noted for the `DialStarted` above |
| `APP_START`/`APP_END` of `UserEvent(BotMeter,...)` or of `AGI(agi://.../botmeter/...)` | `BotSignal` |
| `BotMeter` user-defined event (`CELGenUserEvent(BotMeter,...)`) | `BotSignal` |
| `ANSWER` of a dialled leg or queue member (`AppDial`, `AppDial2`, `AppQueue`) | `DestAnswered` |
| `BRIDGE_ENTER` / `BRIDGE_EXIT` | `BridgeEntered` / `BridgeLeft` (`bridge_id` from `eventextra`) |
| `HANGUP` | `ChannelHungUp` (`hangupcause` from `eventextra`) |
| `BLINDTRANSFER` / `ATTENDEDTRANSFER` | `TransferStarted` |
| any row whose caller id differs from the channel's last one | `CallerIdChanged` first |

CEL writes `APP_START`/`APP_END` only when the application's *name* changes between two
snapshots, so consecutive priorities of one application show as one `APP_START` (the first
one's data) and one `APP_END` (the last one's data); the ones in between are not in CEL at all.
A signal application's `APP_END` whose data differs from its `APP_START` is therefore a signal
of its own. Three or more consecutive signals lose the middle ones: put another application
between them (docs/recovery.md).

Bad values (a time outside 2000..2100, `eventextra` that is not JSON, a cause out of range) are
reported to `on_bad(where, reason)` and the row (or the value) is skipped; nothing raises.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ..bot.session import parse_request
from ..pbx.ami_frames import parse_frame
from ..pbx.events import (
    MAX_CAUSE,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    BotSignal,
    BridgeEntered,
    BridgeLeft,
    CallerIdChanged,
    ChannelCreated,
    ChannelHungUp,
    DestAnswered,
    DialplanStep,
    DialStarted,
    PbxEvent,
    QueueJoined,
    TransferStarted,
    caller_id_text,
    from_ami,
)
from ..tracking.signals import SignalError

BadRow = Callable[[str, str], None]
"""`on_bad(where, reason)`: a row, or a value in it, that was skipped."""

#: the UserEvent / CELGenUserEvent name botmeter's signals go by
SIGNAL_EVENT = "BotMeter"
#: what a dialled leg or a queue member runs while it rings (its ANSWER is the person's)
DIALLED_APPS = frozenset({"appdial", "appdial2", "appqueue"})
#: channels whose caller id and running signal application are remembered (least recently
#: seen dropped first): a channel is forgotten at its hangup, this bounds lost hangups
MAX_CHANNELS = 100_000


@dataclass(frozen=True, slots=True)
class CelRow:
    """One CEL row, by the names of Asterisk's sample mapping. `ts` is UTC epoch seconds;
    `where` says where the row is, for reports (`master.db row 1234`)."""

    ts: float
    eventtype: str
    uniqueid: str
    linkedid: str
    channel: str = ""
    context: str = ""
    exten: str = ""
    appname: str = ""
    appdata: str = ""
    cid_num: str = ""
    cid_name: str = ""
    peer: str = ""
    eventextra: str = ""
    userdeftype: str = ""
    where: str = ""


@dataclass(slots=True)
class _Channel:
    caller_id: tuple[str, str] | None = None
    #: (application, data) of the signal application the channel runs, from its APP_START
    signal_app: tuple[str, str] | None = None


def _ignore(_where: str, _reason: str) -> None:
    return None


class CelTranslator:
    """Feed CEL rows in file order; get the typed events each one means.

    State is what CEL leaves out: per channel, its last caller id and the signal application
    it runs; per call, the channel running `Dial`. Bounded by `max_channels`."""

    def __init__(self, on_bad: BadRow | None = None, *, max_channels: int = MAX_CHANNELS) -> None:
        self._on_bad = on_bad or _ignore
        self.max_channels = max_channels
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        self._dialling: OrderedDict[str, str] = OrderedDict()  # linkedid -> dialling uniqueid
        self.bad_rows = 0
        self._handlers: dict[str, Callable[[CelRow, float], list[PbxEvent]]] = {
            "CHAN_START": self._chan_start,
            "APP_START": self._app_start,
            "APP_END": self._app_end,
            "ANSWER": self._answer,
            "BRIDGE_ENTER": self._bridge,
            "BRIDGE_EXIT": self._bridge,
            "HANGUP": self._hangup,
            "BLINDTRANSFER": self._transfer,
            "ATTENDEDTRANSFER": self._transfer,
        }

    def feed(self, row: CelRow) -> list[PbxEvent]:
        """The events of one row (none for rows tracking needs nothing from)."""
        handler = self._handlers.get(row.eventtype)
        user_defined = row.userdeftype == SIGNAL_EVENT and row.eventtype in (
            "USER_DEFINED", SIGNAL_EVENT)
        if handler is None and not user_defined:
            return []
        if not row.uniqueid:
            self._bad(row, f"{row.eventtype} row without a uniqueid")
            return []
        if not MIN_TIMESTAMP <= row.ts < MAX_TIMESTAMP:  # also NaN
            self._bad(row, f"eventtime {row.ts!r} is not a time in 2000..2100")
            return []
        ts = round(row.ts, 3)
        if handler is None:
            return self._with_caller_id(row, ts, self._user_defined(row, ts))
        if row.eventtype == "CHAN_START":  # its caller id goes with ChannelCreated
            return handler(row, ts)
        return self._with_caller_id(row, ts, handler(row, ts))

    def _bad(self, row: CelRow, reason: str) -> None:
        self.bad_rows += 1
        self._on_bad(row.where or f"{row.eventtype} of {row.uniqueid or '?'}", reason)

    # -- per-channel state ---------------------------------------------------------------

    def _channel(self, uniqueid: str) -> _Channel:
        chan = self._channels.get(uniqueid)
        if chan is None:
            chan = self._channels[uniqueid] = _Channel()
            while len(self._channels) > self.max_channels:
                self._channels.popitem(last=False)
        else:
            self._channels.move_to_end(uniqueid)
        return chan

    def _with_caller_id(self, row: CelRow, ts: float, events: list[PbxEvent]) -> list[PbxEvent]:
        """`CallerIdChanged` before the row's own events when its caller id is new."""
        caller_id = (caller_id_text(row.cid_num), caller_id_text(row.cid_name))
        chan = self._channels.get(row.uniqueid) if row.eventtype == "HANGUP" else self._channel(
            row.uniqueid)
        if chan is None or chan.caller_id == caller_id:
            return events
        first_sight = chan.caller_id is None
        chan.caller_id = caller_id
        if first_sight and caller_id == ("", ""):
            return events
        return [CallerIdChanged(ts, row.uniqueid, row.linkedid, *caller_id), *events]

    # -- handlers ------------------------------------------------------------------------

    def _chan_start(self, row: CelRow, ts: float) -> list[PbxEvent]:
        caller_id = (caller_id_text(row.cid_num), caller_id_text(row.cid_name))
        self._channel(row.uniqueid).caller_id = caller_id
        events: list[PbxEvent] = [ChannelCreated(ts, row.uniqueid, row.linkedid, row.channel,
                                                 row.context, row.exten, *caller_id)]
        dialler = self._dialling.get(row.linkedid)
        if dialler is not None and dialler != row.uniqueid and not row.channel.endswith(";2"):
            # the leg a Dial of this call created (a Local channel's ;2 half is its far end)
            events.append(DialStarted(ts, dialler, row.linkedid, row.channel, row.uniqueid))
        return events

    def _app_start(self, row: CelRow, ts: float) -> list[PbxEvent]:
        events: list[PbxEvent] = [DialplanStep(ts, row.uniqueid, row.linkedid, row.channel,
                                               row.context, row.exten, row.appname, row.appdata)]
        app = row.appname.lower()
        if app == "queue":
            events.append(QueueJoined(ts, row.uniqueid, row.linkedid,
                                      _app_args(row.appdata)[0] if row.appdata else ""))
        elif app == "dial":
            self._dialling.pop(row.linkedid, None)
            self._dialling[row.linkedid] = row.uniqueid
            while len(self._dialling) > self.max_channels:
                self._dialling.popitem(last=False)
        signal = self._signal(row, ts)
        self._channel(row.uniqueid).signal_app = (app, row.appdata) if signal else None
        if signal is not None:
            events.append(signal)
        return events

    def _app_end(self, row: CelRow, ts: float) -> list[PbxEvent]:
        app = row.appname.lower()
        if app == "dial" and self._dialling.get(row.linkedid) == row.uniqueid:
            del self._dialling[row.linkedid]
        chan = self._channel(row.uniqueid)
        started, chan.signal_app = chan.signal_app, None
        if started == (app, row.appdata):
            return []
        # the last of consecutive priorities of one application: CEL shows no APP_START for it
        signal = self._signal(row, ts)
        return [] if signal is None else [signal]

    def _answer(self, row: CelRow, ts: float) -> list[PbxEvent]:
        if row.appname.lower() in DIALLED_APPS:
            return [DestAnswered(ts, row.uniqueid, row.channel)]
        return []

    def _bridge(self, row: CelRow, ts: float) -> list[PbxEvent]:
        extra = self._extra(row)
        bridge_id = str(extra.get("bridge_id") or "")
        if not bridge_id:
            if extra:
                self._bad(row, f"{row.eventtype} without a bridge_id in eventextra")
            return []
        kind = BridgeEntered if row.eventtype == "BRIDGE_ENTER" else BridgeLeft
        return [kind(ts, row.uniqueid, row.linkedid, row.channel, bridge_id)]

    def _hangup(self, row: CelRow, ts: float) -> list[PbxEvent]:
        self._channels.pop(row.uniqueid, None)
        if self._dialling.get(row.linkedid) == row.uniqueid:
            del self._dialling[row.linkedid]
        cause = self._extra(row).get("hangupcause")
        if cause is not None and not (isinstance(cause, int) and 0 <= cause <= MAX_CAUSE):
            self._bad(row, f"hangupcause {cause!r} is not a cause (0..{MAX_CAUSE}): taken as "
                           "unknown")
            cause = None
        return [ChannelHungUp(ts, row.uniqueid, row.linkedid, row.channel, cause)]

    def _transfer(self, row: CelRow, ts: float) -> list[PbxEvent]:
        extra = self._extra(row)
        keys = ("extension",) if row.eventtype == "BLINDTRANSFER" else (
            "transfer_target_channel_name", "channel2_name", "app")
        target = next((str(extra[k]) for k in keys if extra.get(k) not in (None, "", "N/A")), "")
        return [TransferStarted(ts, row.uniqueid, row.linkedid, target)]

    def _user_defined(self, row: CelRow, ts: float) -> list[PbxEvent]:
        """`CELGenUserEvent(BotMeter,Signal: usage,Module: asr,...)`: eventextra is
        `{"extra": "Signal: usage,Module: asr,..."}`."""
        extra = self._extra(row).get("extra")
        if not isinstance(extra, str):
            self._bad(row, f"{SIGNAL_EVENT} user-defined event without its extra text")
            return []
        signal = _user_event(row, ts, _app_args(extra) if extra else [])
        return [] if signal is None else [signal]

    # -- helpers -------------------------------------------------------------------------

    def _extra(self, row: CelRow) -> dict[str, Any]:
        """The row's eventextra JSON object; {} (reported) when it is not one."""
        if not row.eventextra:
            return {}
        try:
            extra = json.loads(row.eventextra)
        except ValueError:
            extra = None
        if not isinstance(extra, dict):
            self._bad(row, f"eventextra is not a JSON object: {row.eventextra[:60]!r}")
            return {}
        return extra

    def _signal(self, row: CelRow, ts: float) -> BotSignal | None:
        """The bot signal an application row carries: `UserEvent(BotMeter,...)`, or
        `AGI(agi://host/botmeter/<signal>?...)` (FastAGI: its data is the request)."""
        app = row.appname.lower()
        if app == "userevent":
            args = _app_args(row.appdata)
            return _user_event(row, ts, args[1:]) if args and args[0] == SIGNAL_EVENT else None
        if app == "agi" and "://" in row.appdata:
            return self._fastagi(row, ts)
        return None

    def _fastagi(self, row: CelRow, ts: float) -> BotSignal | None:
        url, *args = _app_args(row.appdata)
        env = {"agi_request": url, **{f"agi_arg_{i}": arg for i, arg in enumerate(args, 1)}}
        try:
            signal, fields, _ = parse_request(env)
        except SignalError as exc:
            if "/botmeter/" in url.lower():
                self._bad(row, f"FastAGI signal not understood: {exc}")
            return None
        return BotSignal(ts, row.linkedid, row.uniqueid, signal, fields, via="cel")


def _user_event(row: CelRow, ts: float, lines: list[str]) -> BotSignal | None:
    """A BotMeter user event's signal, read exactly as its AMI `UserEvent` would be: the same
    header lines after the same envelope, through `from_ami`."""
    envelope = (f"Event: UserEvent\nUserEvent: {SIGNAL_EVENT}\nTimestamp: {ts!r}\n"
                f"Channel: {row.channel}\nUniqueid: {row.uniqueid}\nLinkedid: {row.linkedid}\n")
    text = envelope + "".join(line.replace("\n", " ") + "\n" for line in lines)
    event = from_ami(parse_frame(text.encode()), ts)
    return replace(event, via="cel") if isinstance(event, BotSignal) else None


def _app_args(data: str) -> list[str]:
    """An application's data split into its arguments as Asterisk splits them (comma-separated;
    parentheses, brackets and double quotes group; a backslash escapes the next character;
    quotes and backslashes removed), as `AST_STANDARD_APP_ARGS` does."""
    args: list[str] = []
    current: list[str] = []
    paren = bracket = 0
    quote = escaped = False
    for ch in data:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quote = not quote
        elif ch == "," and not (paren or bracket or quote):
            args.append("".join(current))
            current = []
        else:
            if ch == "(":
                paren += 1
            elif ch == ")" and paren:
                paren -= 1
            elif ch == "[":
                bracket += 1
            elif ch == "]" and bracket:
                bracket -= 1
            current.append(ch)
    args.append("".join(current))
    return args


def cel_events(rows: Iterable[CelRow], on_bad: BadRow | None = None) -> Iterator[PbxEvent]:
    """The typed events of CEL rows given in file order."""
    translator = CelTranslator(on_bad)
    for row in rows:
        yield from translator.feed(row)
