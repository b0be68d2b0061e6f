"""The CEL rows an Asterisk 20 writes, derived from channel snapshots as `main/cel.c` does.

Fed `botmeter.sim.channels` messages, `CelLog` returns the rows `cel_sqlite3_custom` would
write with the mapping of deploy-time `cel_sqlite3_custom.conf` (`CEL_COLUMNS`) and a cel.conf
listing the applications of `TRACKED_APPS` with `events = ALL`:

- CHAN_START when a channel appears (its caller id as it was created: often empty);
- APP_END (the old snapshot) and APP_START (the new) when the application *name* changes,
  for listed applications only: consecutive `UserEvent` steps give one APP_START with the
  first data and one APP_END with the last, as the real PBX does;
- ANSWER when a channel goes Up; HANGUP (`{"hangupcause":N,"hangupsource":"...",
  "dialstatus":"..."}`), CHAN_END, and LINKEDID_END once the last channel of a linkedid
  has ended (or moved to another linkedid);
- BRIDGE_ENTER (`peer`: the channels already in the bridge) and BRIDGE_EXIT (`peer` empty,
  as the Asterisk 20.21 fixture shows), `eventextra` `{"bridge_id":...,
  "bridge_technology":...}`.

Pure: no I/O; rows carry their time as epoch seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from botmeter.sim.channels import Bridged, Dial, Message, Snapshot, Update

#: the columns of the `cel` table (lab-cel_sqlite3_custom.conf), after `AcctId`
CEL_COLUMNS = (
    "eventtype", "eventtime", "cidname", "cidnum", "cidani", "ciddnid", "context", "exten",
    "channame", "appname", "appdata", "uniqueid", "linkedid", "peer", "userdeftype",
    "eventextra",
)
#: cel.conf's `apps` as shipped (Asterisk compares them lower-cased)
TRACKED_APPS = frozenset({
    "answer", "agi", "userevent", "queue", "dial", "wait", "hangup", "ringing", "stasis",
    "audiosocket", "celgenuserevent",
})
#: dial statuses cel.c keeps for the caller's HANGUP row
_DIAL_STATUSES = frozenset({"CHANUNAVAIL", "CONGESTION", "NOANSWER", "BUSY", "ANSWER",
                            "CANCEL", "DONTCALL", "TORTURE", "INVALIDARGS"})


@dataclass(frozen=True, slots=True)
class CelRow:
    """One CEL event as the `cel` table holds it (text columns, `eventtime` a float)."""

    eventtype: str
    eventtime: float
    cidname: str
    cidnum: str
    cidani: str
    ciddnid: str
    context: str
    exten: str
    channame: str
    appname: str
    appdata: str
    uniqueid: str
    linkedid: str
    peer: str = ""
    userdeftype: str = ""
    eventextra: str = ""

    def values(self) -> tuple[str, ...]:
        """The row's column values, `eventtime` as cel.c formats it (`%ld.%06ld`)."""
        return (self.eventtype, format_eventtime(self.eventtime), *(
            getattr(self, column) for column in CEL_COLUMNS[2:]))


def format_eventtime(stamp: float) -> str:
    """Epoch seconds with microseconds, as CEL writes them without a `dateformat`."""
    micros = round(stamp * 1_000_000)
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _json(value: dict[str, object]) -> str:
    """A JSON object as Asterisk's ast_json_dump_string writes it (compact, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class CelLog:
    """Feed channel messages in order (`handle`); get the CEL rows they cause."""

    def __init__(self, apps: frozenset[str] = TRACKED_APPS) -> None:
        self.apps = frozenset(app.lower() for app in apps)
        self._linkedids: Counter[str] = Counter()
        self._dialstatus: dict[str, str] = {}

    def handle(self, message: Message) -> list[CelRow]:
        if isinstance(message, Update):
            return self._update(message)
        if isinstance(message, Dial):
            self._dial(message)
            return []
        return [self._bridge(message)]

    def _update(self, update: Update) -> list[CelRow]:
        old, new, stamp = update.old, update.new, update.stamp
        if old is None:
            self._linkedids[new.linkedid] += 1
            return [_row("CHAN_START", stamp, new)]
        rows: list[CelRow] = []
        # cel.c's order: the application change, then the state, then the linkedid
        if old.appl != new.appl:
            if self._tracked(old.appl):
                rows.append(_row("APP_END", stamp, old))
            if self._tracked(new.appl):
                rows.append(_row("APP_START", stamp, new))
        if new.dead and not old.dead:
            extra = {"hangupcause": new.cause, "hangupsource": new.hangup_source,
                     "dialstatus": self._dialstatus.pop(new.uniqueid, "")}
            rows.append(_row("HANGUP", stamp, new, extra=_json(extra)))
            rows.append(_row("CHAN_END", stamp, new))
            rows.extend(self._retire(stamp, new))
        elif old.state != new.state and new.up:
            rows.append(_row("ANSWER", stamp, new))
        if old.linkedid != new.linkedid:
            self._linkedids[new.linkedid] += 1
            rows.extend(self._retire(stamp, old))
        return rows

    def _tracked(self, appl: str) -> bool:
        return bool(appl) and appl.lower() in self.apps

    def _retire(self, stamp: float, snap: Snapshot) -> list[CelRow]:
        """LINKEDID_END when `snap` was the last channel on its linkedid."""
        self._linkedids[snap.linkedid] -= 1
        if self._linkedids[snap.linkedid] > 0:
            return []
        del self._linkedids[snap.linkedid]
        return [_row("LINKEDID_END", stamp, snap)]

    def _dial(self, dial: Dial) -> None:
        """Keep the caller's dial status for its HANGUP row (an answer wins over failures)."""
        if dial.caller is None or dial.status.upper() not in _DIAL_STATUSES:
            return
        kept = self._dialstatus.get(dial.caller.uniqueid)
        if kept is None or (dial.status.upper() == "ANSWER" and kept.upper() != "ANSWER"):
            self._dialstatus[dial.caller.uniqueid] = dial.status

    def _bridge(self, bridged: Bridged) -> CelRow:
        extra = _json({"bridge_id": bridged.bridge_id,
                       "bridge_technology": bridged.technology})
        if bridged.entered:
            peer = ",".join(other.name for other in bridged.others)
            return _row("BRIDGE_ENTER", bridged.stamp, bridged.channel, peer=peer, extra=extra)
        return _row("BRIDGE_EXIT", bridged.stamp, bridged.channel, extra=extra)


def _row(eventtype: str, stamp: float, snap: Snapshot, *, peer: str = "",
         extra: str = "") -> CelRow:
    return CelRow(eventtype, stamp, snap.cid_name, snap.cid_num, snap.ani, snap.dnid,
                  snap.context, snap.exten, snap.name, snap.appl, snap.data, snap.uniqueid,
                  snap.linkedid, peer, "", extra)
