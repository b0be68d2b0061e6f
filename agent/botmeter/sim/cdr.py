"""The CDRs an Asterisk 20 writes, derived from channel snapshots as `main/cdr.c` does.

A port of the CDR engine's state machine (Single, Dial, DialedPending, Bridged, Finalized),
fed `botmeter.sim.channels` messages. Every channel starts a chain of records as party A; a
dial gives the caller's record a party B (one more record per further leg dialled, as
Queue's ring-all does); bridges pair the parties; a channel's chain is written when it hangs
up, except records of a dialled leg that never became anyone's party A (so a queue member's
Local ;1 writes nothing of its own). Times are kept exact; the tables get whole seconds.

`CdrRow.values()` are the columns of lab-cdr_sqlite3_custom.conf (`CDR_COLUMNS`);
`CdrRow.master_csv()` is the line cdr_csv writes with `usegmtime`, `loguniqueid` and
`loguserfield` (lab-cdr.conf). Pure: no I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

from botmeter.sim.channels import Bridged, Dial, Message, Snapshot, Update

#: the columns of the `cdr` table (lab-cdr_sqlite3_custom.conf), after `AcctId`
CDR_COLUMNS = (
    "calldate", "clid", "src", "dst", "dcontext", "channel", "dstchannel", "lastapp",
    "lastdata", "start", "answer", "end", "duration", "billsec", "disposition", "uniqueid",
    "linkedid", "sequence",
)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
AMA_FLAGS = "DOCUMENTATION"
#: hangup causes cdr.c turns into a disposition when nobody answered
_CAUSE_DISPOSITIONS = {17: "BUSY", 34: "FAILED", 3: "FAILED", 20: "FAILED", 16: "NO ANSWER",
                       19: "NO ANSWER"}
_DIAL_DISPOSITIONS = {"ANSWER": "ANSWERED", "BUSY": "BUSY", "CANCEL": "NO ANSWER",
                      "NOANSWER": "NO ANSWER", "CONGESTION": "FAILED", "FAILED": "FAILED"}
_NOT_DIAL_ENDS = frozenset({"RINGING", "PROCEEDING", "PROGRESS"})


class _State(Enum):
    SINGLE = "Single"
    DIAL = "Dial"
    DIALED_PENDING = "DialedPending"
    BRIDGED = "Bridged"
    FINALIZED = "Finalized"


@dataclass(frozen=True, slots=True)
class CdrRow:
    """One CDR as the backends receive it."""

    clid: str
    src: str
    dst: str
    dcontext: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    start: float
    answer: float | None
    end: float
    duration: int
    billsec: int
    disposition: str
    uniqueid: str
    linkedid: str
    sequence: int
    userfield: str

    def values(self) -> tuple[str | int, ...]:
        """The `cdr` table's columns (times as `CDR(start)` prints them: UTC, whole seconds)."""
        start = format_time(self.start)
        return (start, self.clid, self.src, self.dst, self.dcontext, self.channel,
                self.dstchannel, self.lastapp, self.lastdata, start,
                format_time(self.answer), format_time(self.end), self.duration, self.billsec,
                self.disposition, self.uniqueid, self.linkedid, self.sequence)

    def master_csv(self) -> str:
        """The Master.csv line (with its newline), quoted as cdr_csv quotes."""
        text = [_quoted(v) for v in ("", self.src, self.dst, self.dcontext, self.clid,
                                     self.channel, self.dstchannel, self.lastapp,
                                     self.lastdata)]
        text += [_quoted(format_time(t)) if t is not None else ""
                 for t in (self.start, self.answer, self.end)]
        text += [str(self.duration), str(self.billsec)]
        text += [_quoted(v) for v in (self.disposition, AMA_FLAGS, self.uniqueid,
                                      self.userfield)]
        return ",".join(text) + "\n"


def format_time(stamp: float | None) -> str:
    """A CDR time in whole seconds, UTC (empty for none: a call nobody answered)."""
    return "" if stamp is None else time.strftime(TIME_FORMAT, time.gmtime(int(stamp)))


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def callerid_merge(name: str, number: str) -> str:
    """`"name" <number>`, as ast_callerid_merge writes a CDR's clid."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{number}>'


def _whole_seconds(start: float, end: float) -> int:
    """Whole seconds between two times, as cdr.c counts them (milliseconds, truncated)."""
    return (round(end * 1_000_000) - round(start * 1_000_000)) // 1000 // 1000


@dataclass(slots=True, eq=False)
class _Record:
    """One cdr_object: a party A, perhaps a party B, and its times."""

    party_a: Snapshot
    sequence: int
    start: float
    lastevent: float
    state: _State = _State.SINGLE
    party_b: Snapshot | None = None
    answer: float | None = None
    end: float | None = None
    disposition: str | None = None  # None: cdr.c's AST_CDR_NULL
    appl: str = ""
    data: str = ""
    context: str = ""
    exten: str = ""
    linkedid: str = ""
    bridge: str = ""
    locked: bool = False  # AST_CDR_LOCK_APP
    userfield: str = ""

    def check_answer(self) -> None:
        if self.party_a.up and self.answer is None:
            self.answer = self.lastevent

    def finalize(self) -> None:
        if self.end is not None:
            return
        self.end = self.lastevent
        if self.disposition is None:
            if self.answer is not None:
                self.disposition = "ANSWERED"
            elif self.party_a.cause:
                self.disposition = _CAUSE_DISPOSITIONS.get(self.party_a.cause)
            elif self.party_b is not None and self.party_b.cause:
                self.disposition = _CAUSE_DISPOSITIONS.get(self.party_b.cause)
            else:
                self.disposition = "FAILED"

    def to(self, state: _State) -> None:
        self.state = state
        if state is _State.FINALIZED:
            self.finalize()

    def row(self) -> CdrRow:
        a, b = self.party_a, self.party_b
        end = self.end if self.end is not None else self.lastevent
        duration = _whole_seconds(self.start, end)
        billsec = 0 if self.answer is None else _whole_seconds(self.answer, end)
        userfield = (f"{self.userfield};{b.userfield}" if b is not None and b.userfield
                     else self.userfield)
        return CdrRow(callerid_merge(a.cid_name, a.cid_num), a.cid_num, self.exten,
                      self.context, a.name, b.name if b else "", self.appl, self.data,
                      self.start, self.answer, end, duration, billsec,
                      self.disposition or "NO ANSWER", a.uniqueid, self.linkedid,
                      self.sequence, userfield)


class CdrLog:
    """Feed channel messages in order (`handle`); get the CDRs written at each hangup."""

    def __init__(self) -> None:
        self._chains: dict[str, list[_Record]] = {}
        self._as_party_b: dict[str, dict[_Record, None]] = {}  # channel name -> its records
        self._sequence = 0

    def handle(self, message: Message) -> list[CdrRow]:
        if isinstance(message, Update):
            return self._update(message)
        if isinstance(message, Dial):
            self._dial(message)
        else:
            self._bridged(message)
        return []

    # ---- records --------------------------------------------------------------------------

    def _alloc(self, snap: Snapshot, stamp: float) -> _Record:
        rec = _Record(snap, self._sequence, stamp, stamp, linkedid=snap.linkedid)
        self._sequence += 1
        rec.check_answer()
        return rec

    def _append(self, chain: list[_Record], stamp: float) -> _Record:
        """cdr_object_create_and_append: a new record after the chain's last."""
        last = chain[-1]
        rec = self._alloc(last.party_a, stamp)
        rec.appl, rec.data, rec.context, rec.exten = last.appl, last.data, last.context, last.exten
        rec.linkedid, rec.userfield = last.linkedid, last.userfield
        chain.append(rec)
        return rec

    def _party_a(self, rec: _Record, snap: Snapshot) -> bool:
        """The record's process_party_a; True when it wants a new record (rejects)."""
        if rec.state is _State.FINALIZED:
            return True
        if rec.state is _State.DIALED_PENDING and _cep_changed(rec.party_a, snap):
            if rec.party_b is not None:
                rec.to(_State.FINALIZED)
                return True
            rec.state = _State.SINGLE  # without re-initialising its start
        _base_party_a(rec, snap)
        return False

    def _update(self, update: Update) -> list[CdrRow]:
        old, new, stamp = update.old, update.new, update.stamp
        if old is None:
            self._chains[new.uniqueid] = [self._alloc(new, stamp)]
            return []
        chain = self._chains.get(new.uniqueid)
        if chain is None:
            return []
        rejects = True
        for rec in chain:
            rec.lastevent = stamp
            rejects &= self._party_a(rec, new)
        if rejects and new.appl and _cep_changed(old, new):
            self._party_a(self._append(chain, stamp), new)
        rows: list[CdrRow] = []
        if new.dead:
            for rec in chain:
                rec.lastevent = stamp
                rec.finalize()
            rows = [rec.row() for rec in chain
                    if not (rec.party_a.dialed and rec.party_b is None)]
            del self._chains[new.uniqueid]
            for rec in chain:
                self._set_party_b(rec, None)
        for rec in self._party_b_of(new.name):
            if rec.state in (_State.DIAL, _State.BRIDGED):
                rec.party_b = new
                if new.dead:
                    rec.to(_State.FINALIZED)
            if new.dead:
                rec.finalize()
        return rows

    def _party_b_of(self, name: str) -> list[_Record]:
        return list(self._as_party_b.get(name, ()))

    def _set_party_b(self, rec: _Record, party_b: Snapshot | None) -> None:
        """Give `rec` another party B (None: none), keeping the index by name."""
        old = rec.party_b
        if old is not None and (party_b is None or old.name != party_b.name):
            records = self._as_party_b[old.name]
            records.pop(rec, None)
            if not records:
                del self._as_party_b[old.name]
        if party_b is not None:
            self._as_party_b.setdefault(party_b.name, {})[rec] = None
        rec.party_b = party_b

    # ---- dials ------------------------------------------------------------------------------

    def _dial(self, dial: Dial) -> None:
        owner = dial.caller or dial.peer
        chain = self._chains.get(owner.uniqueid)
        if chain is None:
            return
        if not dial.status:
            unhandled = True
            for rec in chain:
                rec.lastevent = dial.stamp
                if rec.state in (_State.SINGLE, _State.DIAL, _State.DIALED_PENDING):
                    unhandled &= self._dial_begin(rec, dial)
            if unhandled:
                self._dial_begin(self._append(chain, dial.stamp), dial)
            return
        if dial.status.upper() in _NOT_DIAL_ENDS:
            return
        for rec in chain:
            rec.lastevent = dial.stamp
            if rec.state is _State.DIAL:
                self._dial_end(rec, dial)

    def _dial_begin(self, rec: _Record, dial: Dial) -> bool:
        """process_dial_begin; True when the record cannot take this dial."""
        if rec.state is _State.DIAL:
            return True
        if rec.state is _State.DIALED_PENDING:
            rec.to(_State.FINALIZED)
            return True
        if dial.caller is not None and rec.party_a.name == dial.caller.name:
            _base_party_a(rec, dial.caller)
            self._set_party_b(rec, dial.peer)
            rec.locked = True
        elif rec.party_a.name == dial.peer.name:  # originated: the dialled one is party A
            _base_party_a(rec, dial.peer)
        rec.state = _State.DIAL
        return False

    @staticmethod
    def _dial_end(rec: _Record, dial: Dial) -> None:
        rec.party_a = dial.caller or dial.peer
        if rec.party_b is not None:
            if rec.party_b.name != dial.peer.name:
                return  # another leg's status
            rec.party_b = dial.peer
        rec.disposition = _DIAL_DISPOSITIONS.get(dial.status.upper(), "FAILED")
        rec.to(_State.DIALED_PENDING if rec.disposition == "ANSWERED" else _State.FINALIZED)

    # ---- bridges ----------------------------------------------------------------------------

    def _bridged(self, bridged: Bridged) -> None:
        if bridged.entered:
            # the bridge's channels in the order they entered, the one entering last
            self._enter(bridged, [*(o.uniqueid for o in bridged.others),
                                  bridged.channel.uniqueid])
        else:
            self._leave(bridged)

    def _enter(self, bridged: Bridged, bridge: list[str]) -> None:
        """handle_standard_bridge_enter_message."""
        chain = self._chains.get(bridged.channel.uniqueid)
        if chain is None:
            return
        while True:
            handled: _Record | None = None
            for rec in chain:
                rec.lastevent = bridged.stamp
                self._party_a(rec, bridged.channel)
                if rec.state is _State.DIALED_PENDING:
                    rec.state = _State.DIAL
                if rec.state not in (_State.SINGLE, _State.DIAL):
                    continue  # Bridged: no handler; Finalized: needs a new record
                obtained = self._enter_record(rec, bridged.bridge_id, bridge)
                handled = handled or rec
                if not obtained:
                    chain[0].finalize()
            if handled is not None:
                self._pairings(handled, bridge)
                return
            self._append(chain, bridged.stamp)

    def _enter_record(self, rec: _Record, bridge_id: str, bridge: list[str]) -> bool:
        """A Single or Dial record enters: True when it is alone or found its party B."""
        rec.bridge = bridge_id
        single = rec.state is _State.SINGLE
        rec.state = _State.BRIDGED
        if len(bridge) == 1:
            return True
        if not single and rec.party_b is None:
            return False
        for cand in self._in_bridge(bridge, bridge_id):
            party_b = _single_takes(rec, cand) if single else None
            if party_b is not None:
                self._set_party_b(rec, party_b)
                return True
            if not single and rec.party_b is not None and cand.party_a.name == rec.party_b.name:
                rec.party_b = cand.party_a
                if cand.party_b is None:
                    cand.finalize()
                return True
        return False

    def _in_bridge(self, bridge: list[str], bridge_id: str) -> list[_Record]:
        return [cand for member in bridge for cand in self._chains.get(member, ())
                if cand.state is _State.BRIDGED and cand.bridge == bridge_id]

    def _pairings(self, rec: _Record, bridge: list[str]) -> None:
        """handle_bridge_pairings: pair the entering record with everyone in the bridge."""
        for member in bridge:
            for cand in self._chains.get(member, ()):
                if cand.bridge != rec.bridge:
                    continue
                if cand.party_a.name == rec.party_a.name or (
                        rec.party_b is not None and rec.party_b.name == cand.party_a.name):
                    break
                if _pick_party_a(rec.party_a, cand.party_a) is rec.party_a:
                    self._paired(rec, cand.party_a)
                elif cand.party_b is not None and cand.party_b.name != rec.party_a.name:
                    self._paired(cand, rec.party_a)
                else:
                    self._set_party_b(cand, rec.party_a)
                    cand.end = None  # re-activated
                break

    def _paired(self, rec: _Record, party_b: Snapshot) -> None:
        """bridge_candidate_add_to_cdr: a new bridged record of `rec`'s party A with party_b."""
        chain = self._chains[rec.party_a.uniqueid]
        new = self._append(chain, rec.lastevent)
        self._set_party_b(new, party_b)
        new.check_answer()
        new.bridge = rec.bridge
        new.state = _State.BRIDGED

    def _leave(self, bridged: Bridged) -> None:
        chain = self._chains.get(bridged.channel.uniqueid)
        if chain is None:
            return
        left = False
        name = bridged.channel.name
        for rec in chain:
            rec.lastevent = bridged.stamp
            if rec.state in (_State.SINGLE, _State.DIAL, _State.DIALED_PENDING):
                rec.bridge, left = "", True
            elif rec.state is _State.BRIDGED and rec.bridge == bridged.bridge_id and (
                    rec.party_a.name == name or rec.party_b is None or rec.party_b.name == name):
                rec.to(_State.FINALIZED)
                rec.bridge, left = "", True
        if not left:
            return
        for rec in self._party_b_of(name):
            if rec.state is _State.BRIDGED and rec.bridge == bridged.bridge_id:
                rec.lastevent = bridged.stamp
                rec.finalize()


def _base_party_a(rec: _Record, snap: Snapshot) -> None:
    """base_process_party_a: follow party A's dialplan location, application and answer."""
    if not snap.in_subroutine:
        rec.context, rec.exten = snap.context, snap.exten
    rec.party_a = snap
    if snap.userfield:
        rec.userfield = snap.userfield
    if (not rec.locked and snap.appl
            and (not snap.appl.lower().startswith("appdial") or not rec.appl)):
        rec.appl, rec.data = snap.appl, snap.data
        if snap.appl == "Dial":
            rec.locked = True
    rec.linkedid = snap.linkedid
    rec.check_answer()
    if snap.dead and rec.state is not _State.FINALIZED:
        rec.to(_State.FINALIZED)


def _cep_changed(old: Snapshot, new: Snapshot) -> bool:
    """snapshot_cep_changed: a new application at a new dialplan location."""
    return (new.appl != old.appl and not new.appl.lower().startswith("appdial")
            and (new.context, new.exten, new.priority) != (old.context, old.exten, old.priority))


def _pick_party_a(left: Snapshot, right: Snapshot) -> Snapshot:
    """cdr_object_pick_party_a: never a dialled leg over one that was not; else the older."""
    if left.dialed != right.dialed:
        return right if left.dialed else left
    return right if right.created < left.created else left


def _single_takes(rec: _Record, cand: _Record) -> Snapshot | None:
    """single_state_bridge_enter_comparison: the party B `rec` finds in `cand`, if any."""
    if rec.party_a.name == cand.party_a.name:
        return None
    if _pick_party_a(rec.party_a, cand.party_a) is rec.party_a:
        if cand.party_b is None:
            cand.finalize()  # taken over: its record ends (it may come back)
        return cand.party_a
    if cand.party_b is None or rec.party_a.name == cand.party_b.name:
        return None
    if _pick_party_a(rec.party_a, cand.party_b) is rec.party_a:
        return cand.party_b
    return None
