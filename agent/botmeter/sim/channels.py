"""The PBX's channel snapshots, kept the way Asterisk's core keeps them for CEL and CDR.

Asterisk's CEL and CDR engines never see AMI: they are fed by the core's channel snapshot
updates (old snapshot, new snapshot), dial messages and bridge messages. `ChannelCache`
rebuilds those from the AMI event stream (the simulator's, or a real capture's), so
`botmeter.sim.cel` and `botmeter.sim.cdr` can derive their rows the way `main/cel.c` and
`main/cdr.c` do. Pure: events in, messages out; no I/O, no clock.

What a snapshot holds that AMI does not show is inferred as Asterisk sets it:

- the *application* comes from `Newexten` (a dialplan step); when a step ends Asterisk puts
  back the application the channel had before dialplan ran (`AppDial2` on an originated
  channel, `AppQueue`/`AppDial` on a dialled leg, nothing otherwise), which shows in the
  snapshot of its hangup;
- `Gosub` sets the subroutine flag for the steps that follow, up to and including `Return`;
- the hangup source is `dialplan/builtin` after a `Hangup()` step, the channel's own name when
  its driver asked for the hangup (a `HangupRequest` without a cause: a SIP BYE or CANCEL);
- ANI is the caller number, from the first update after creation, on a channel that carries
  it: not a dialled Local ;1, nor the ;2 of an originated Local pair (the caller's phone);
  the DNID of a non-Local channel is the extension it arrived at.

A marker event `@app` (never an AMI event) says a channel's application changed without a
dialplan step: an AGI `EXEC`, which AMI does not show but the snapshot (and so CEL) does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

UNKNOWN = "<unknown>"
#: the application a channel shows while it runs no dialplan: originated, queued, dialled
ORIGINATED_APP = "AppDial2"
DIALED_APPS = ("AppDial", "AppQueue")
#: the marker of an application change without a dialplan step (AGI EXEC)
APP_MARKER = "@app"
HANGUP_APP = "Hangup"
DIALPLAN_HANGUP_SOURCE = "dialplan/builtin"
UP = 6
#: AMI events that carry no news for CEL or CDR (a real capture holds them)
IGNORED = frozenset({"CEL", "Cdr"})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One channel as Asterisk's core published it at one moment."""

    name: str
    uniqueid: str
    linkedid: str
    state: int
    cid_name: str
    cid_num: str
    ani: str
    dnid: str
    context: str
    exten: str
    priority: str
    appl: str
    data: str
    created: float
    dead: bool = False
    cause: int = 0
    hangup_source: str = ""
    in_subroutine: bool = False
    #: a leg a dialplan application dialled (OUTGOING, not ORIGINATED in Asterisk's terms)
    dialed: bool = False
    #: CDR(userfield), as the dialplan set it
    userfield: str = ""

    @property
    def up(self) -> bool:
        return self.state == UP

    @property
    def local(self) -> bool:
        return self.name.startswith("Local/")


@dataclass(frozen=True, slots=True)
class Update:
    """A channel snapshot changed (`old` is None for a new channel)."""

    stamp: float
    old: Snapshot | None
    new: Snapshot


@dataclass(frozen=True, slots=True)
class Dial:
    """A dial began (`status` empty) or ended; `caller` is None for an originate."""

    stamp: float
    caller: Snapshot | None
    peer: Snapshot
    status: str


@dataclass(frozen=True, slots=True)
class Bridged:
    """`channel` entered or left a bridge; `others` are the channels left in it besides."""

    stamp: float
    entered: bool
    bridge_id: str
    technology: str
    channel: Snapshot
    others: tuple[Snapshot, ...]


Message = Update | Dial | Bridged


@dataclass(slots=True)
class _Channel:
    """What the cache keeps per live channel besides its last snapshot."""

    snap: Snapshot
    arrived_at: str  # the extension it was created at (a SIP call's DNID)
    partner: str = ""  # a Local ;2's ;1 (uniqueid)
    base_appl: str = ""
    base_data: str = ""
    in_subroutine_after: bool = False  # the flag the next step's snapshot carries
    pending_source: str = ""
    dial_marked: bool = False
    partner_dialed: bool = False  # a Local ;2's ;1 was dialled (kept after the ;1 is gone)

    @property
    def dialed(self) -> bool:
        return self.base_appl in DIALED_APPS or self.dial_marked


def _cid(value: str) -> str:
    return "" if value == UNKNOWN else value


class ChannelCache:
    """Feed AMI events in order (`feed`); get the snapshot, dial and bridge messages back."""

    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}
        self._by_name: dict[str, str] = {}
        self._bridges: dict[str, dict[str, None]] = {}

    def snapshot(self, uniqueid: str) -> Snapshot | None:
        """The live channel's latest snapshot."""
        chan = self._channels.get(uniqueid)
        return chan.snap if chan else None

    def live(self) -> list[Snapshot]:
        """Every live channel, oldest first."""
        return [chan.snap for chan in self._channels.values()]

    def feed(self, stamp: float, name: str, headers: Mapping[str, str]) -> list[Message]:
        """The messages one AMI event (or `@app` marker) stands for, in Asterisk's order."""
        if name in IGNORED:
            return []
        if name == "Newchannel":
            return self._created(stamp, headers)
        chan = self._channels.get(headers.get("Uniqueid", ""))
        dest = self._channels.get(headers.get("DestUniqueid", ""))
        out: list[Message] = []
        if chan is not None:
            if name == "HangupRequest" and "Cause" not in headers and not chan.snap.local:
                chan.pending_source = chan.snap.name  # the far end hung up (BYE, CANCEL)
            out.extend(self._updated(stamp, chan, name, headers))
            if name == "Hangup":
                self._forget(chan.snap)
                return out
        if dest is not None:
            out.extend(self._updated(stamp, dest, "", _unprefixed(headers, "Dest")))
            if name in ("DialBegin", "DialEnd"):
                out.extend(self._dial(stamp, chan, dest, headers.get("DialStatus", "")))
        if name in ("BridgeEnter", "BridgeLeave") and chan is not None:
            out.append(self._bridge(stamp, chan, name == "BridgeEnter", headers))
        return out

    # ---- channels -------------------------------------------------------------------------

    def _created(self, stamp: float, h: Mapping[str, str]) -> list[Message]:
        uniqueid = h.get("Uniqueid", "")
        if not uniqueid or uniqueid in self._channels:
            return []
        snap = Snapshot(
            name=h.get("Channel", ""), uniqueid=uniqueid, linkedid=h.get("Linkedid") or uniqueid,
            state=_int(h.get("ChannelState", "0")), cid_name=_cid(h.get("CallerIDName", "")),
            cid_num=_cid(h.get("CallerIDNum", "")), ani="", dnid="",
            context=h.get("Context", ""), exten=h.get("Exten", ""),
            priority=h.get("Priority", "1"), appl="", data="", created=stamp,
        )
        chan = _Channel(snap, arrived_at=snap.exten)
        if snap.local and snap.name.endswith(";2"):
            chan.partner = self._by_name.get(snap.name[:-1] + "1", "")
        self._channels[uniqueid] = chan
        self._by_name[snap.name] = uniqueid
        return [Update(stamp, None, snap)]

    def _updated(self, stamp: float, chan: _Channel, event: str,
                 h: Mapping[str, str]) -> list[Message]:
        """Apply the event's snapshot of `chan`: one update, or none if nothing changed."""
        old = chan.snap
        fields: dict[str, object] = {}
        if "ChannelState" in h:
            fields["state"] = _int(h["ChannelState"])
        for key, attr in (("CallerIDName", "cid_name"), ("CallerIDNum", "cid_num")):
            if key in h:
                fields[attr] = _cid(h[key])
        for key, attr in (("Context", "context"), ("Exten", "exten"), ("Priority", "priority")):
            if key in h:
                fields[attr] = h[key]
        if h.get("Linkedid"):
            fields["linkedid"] = h["Linkedid"]
        if event in ("Newexten", APP_MARKER):
            appl, data = h.get("Application", ""), h.get("AppData", "")
            fields.update(appl=appl, data=data)
            if event == "Newexten":
                self._step(chan, appl, data, fields)
        elif event == "Hangup":
            # the dialplan is over: the application from before it shows again
            fields.update(dead=True, cause=_int(h.get("Cause", "0")), appl=chan.base_appl,
                          data=chan.base_data, hangup_source=chan.pending_source)
        self._derive(chan, fields)
        if all(getattr(old, name) == value for name, value in fields.items()):
            return []
        chan.snap = new = replace(old, **fields)  # type: ignore[arg-type]
        return [Update(stamp, old, new)]

    def _step(self, chan: _Channel, appl: str, data: str, fields: dict[str, object]) -> None:
        """A dialplan step (or the application a dialled or originated channel shows)."""
        if appl == ORIGINATED_APP or appl in DIALED_APPS:
            chan.base_appl, chan.base_data = appl, data
            return
        fields["in_subroutine"] = chan.in_subroutine_after
        if appl == "Gosub":
            chan.in_subroutine_after = True
        elif appl == "Return":
            chan.in_subroutine_after = False
        if appl == HANGUP_APP:
            chan.pending_source = DIALPLAN_HANGUP_SOURCE
        elif appl.lower() == "set" and data.startswith("CDR(userfield)="):
            fields["userfield"] = data.partition("=")[2]

    def _derive(self, chan: _Channel, fields: dict[str, object]) -> None:
        """Add the dialled flag, ANI and DNID to an update (see the module's notes)."""
        snap = chan.snap
        if snap.local:
            partner = self._channels.get(chan.partner)
            if partner is not None:
                chan.partner_dialed = partner.dialed
            carries = not chan.dialed if snap.name.endswith(";1") else chan.partner_dialed
            dnid = ""
        else:
            carries, dnid = True, chan.arrived_at
        number = fields.get("cid_num", snap.cid_num)
        fields.update(dialed=chan.dialed, ani=number if carries else "", dnid=dnid)

    def _forget(self, snap: Snapshot) -> None:
        del self._channels[snap.uniqueid]
        if self._by_name.get(snap.name) == snap.uniqueid:
            del self._by_name[snap.name]
        for members in self._bridges.values():
            members.pop(snap.uniqueid, None)

    # ---- dials and bridges -----------------------------------------------------------------

    def _dial(self, stamp: float, caller: _Channel | None, peer: _Channel,
              status: str) -> list[Message]:
        out: list[Message] = []
        if caller is not None and not status and not peer.dial_marked:
            peer.dial_marked = True
            out.extend(self._updated(stamp, peer, "", {}))
        out.append(Dial(stamp, caller.snap if caller else None, peer.snap, status))
        return out

    def _bridge(self, stamp: float, chan: _Channel, entered: bool,
                h: Mapping[str, str]) -> Bridged:
        bridge_id = h.get("BridgeUniqueid", "")
        members = self._bridges.setdefault(bridge_id, {})
        uniqueid = chan.snap.uniqueid
        if entered:
            members[uniqueid] = None
        else:
            members.pop(uniqueid, None)
        others = tuple(self._channels[u].snap for u in members
                       if u != uniqueid and u in self._channels)
        if not members:
            del self._bridges[bridge_id]
        return Bridged(stamp, entered, bridge_id, h.get("BridgeTechnology", ""), chan.snap,
                       others)


def _unprefixed(headers: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The `Dest...` snapshot of a dial event, under the plain header names."""
    size = len(prefix)
    return {key[size:]: value for key, value in headers.items() if key.startswith(prefix)}


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
