"""The CDR fallback: records of the calls in a window, from Asterisk's CDR file.

Reads `cdr_sqlite3_custom`'s SQLite table (`cdr`), `cdr_csv`'s `Master.csv` (no header line:
the standard columns, with `uniqueid` (`loguniqueid = yes`), and `userfield`,
`peeraccount, linkedid, sequence` where cdr.conf adds them), or a CSV with a header line.
Columns by name: `start`, `end`, `channel`, `dcontext`, `dst` and one of `linkedid` or
`uniqueid` are required; `answer`, `clid`, `src`, `dstchannel`, `lastapp`, `lastdata`,
`disposition`, `sequence` are read when present.

A call's CDRs share its `linkedid`, which is also its record's `call_id` (the id AMI and CEL
records of that call have). A file without `linkedid` (the legacy Master.csv layout) groups
the caller's CDRs by its channel and adds the legs it dialled (`dstchannel`, both halves of a
Local channel); its `call_id` is then the caller channel's `uniqueid`, which is the linkedid
whenever the caller's channel is the call's first (a trunk call; not a call a phone of the PBX
placed through a Local channel).

Times are whole seconds: a SQLite file's in the PBX's local time (`CDR(start)`), a headerless
Master.csv's in UTC (`usegmtime = yes` in cdr.conf, as deploy/asterisk/cdr.conf sets it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path

from ..tracking.record import CallRecord
from ..tracking.rules import TrackingRules
from .cdr_call import CdrRow, cdr_record, local_stem
from .cel import BadRow
from .file_source import FileSource, Table, open_table
from .rebuild import MAX_CALL_SECONDS
from .tables import ColumnSet, CsvTable, SourceFormatError, SqliteTable, Values

CDR_COLUMNS = ColumnSet(
    required=("start", "end", "channel", "dcontext", "dst"),
    optional=("answer", "clid", "src", "dstchannel", "lastapp", "lastdata", "disposition",
              "uniqueid", "linkedid", "sequence"),
)
_STANDARD = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
             "lastdata", "start", "answer", "end", "duration", "billsec", "disposition",
             "amaflags")
#: cdr_csv's Master.csv by its number of fields: the standard columns, then `uniqueid`
#: (loguniqueid), `userfield` (loguserfield), `peeraccount, linkedid, sequence` (newcdrcolumns)
MASTER_CSV_LAYOUTS = {
    17: (*_STANDARD, "uniqueid"),
    18: (*_STANDARD, "uniqueid", "userfield"),
    20: (*_STANDARD, "uniqueid", "peeraccount", "linkedid", "sequence"),
    21: (*_STANDARD, "uniqueid", "userfield", "peeraccount", "linkedid", "sequence"),
}
#: the CDRs of one call are all written within this many seconds of its caller's last one
SETTLE_SECONDS = 60.0
#: calls being assembled at most (the oldest is given up beyond: a bound for lost rows)
MAX_OPEN_CALLS = 50_000
DEFAULT_TABLE = "cdr"


class CdrFormatError(SourceFormatError):
    """A CDR file botmeter cannot read: names the file and the column (or what else is wrong)."""


@dataclass(slots=True)
class _Group:
    """The CDRs of one call read so far. Complete once the file is `SETTLE_SECONDS` past its
    caller's last CDR; until a caller CDR comes, it waits `MAX_CALL_SECONDS` past its last."""

    rows: list[CdrRow] = field(default_factory=list)
    settles_at: float = 0.0
    has_caller: bool = False


#: rows filed between two looks for complete calls
SWEEP_ROWS = 1000


class _Grouper:
    """CDRs in file order to the CDRs of each call: by linkedid, or (files without one) by
    the caller's channel and the channels it dialled."""

    def __init__(self, rules: TrackingRules, by_linkedid: bool) -> None:
        self.rules, self.by_linkedid = rules, by_linkedid
        self._groups: dict[str, _Group] = {}
        self._stems: dict[str, str] = {}  # channel stem -> its call's key (no linkedid)
        self._now = 0.0
        self._since_sweep = 0

    def add(self, row: CdrRow) -> list[list[CdrRow]]:
        """File the row; the calls complete by now (looked for every `SWEEP_ROWS` rows)."""
        inbound = self.rules.is_inbound(row.dcontext, row.dst)
        key = self._key(row, inbound)
        group = self._groups.setdefault(key, _Group())
        group.rows.append(row)
        if inbound:
            settles = row.end + SETTLE_SECONDS
            group.settles_at = max(group.settles_at, settles) if group.has_caller else settles
            group.has_caller = True
            if not self.by_linkedid:
                self._link(key, group, row)
        elif not group.has_caller:
            group.settles_at = max(group.settles_at, row.end + MAX_CALL_SECONDS)
        self._now = max(self._now, row.end)
        self._since_sweep += 1
        if self._since_sweep < SWEEP_ROWS and len(self._groups) <= MAX_OPEN_CALLS:
            return []
        self._since_sweep = 0
        return self._settled(self._now)

    def flush(self) -> list[list[CdrRow]]:
        """Every call left (the end of the rows read)."""
        return self._settled(float("inf"))

    def _key(self, row: CdrRow, inbound: bool) -> str:
        if self.by_linkedid:
            return row.linkedid or row.uniqueid
        stem = local_stem(row.channel)
        return self._stems.get(stem) or (row.uniqueid if inbound else f"stem:{stem}")

    def _link(self, key: str, group: _Group, row: CdrRow) -> None:
        """A caller CDR: its channel and the leg it dialled belong to its call (legs written
        before it, waiting under their own stem, join it)."""
        for channel in (row.channel, row.dstchannel):
            if channel:
                stem = local_stem(channel)
                self._stems[stem] = key
                waiting = self._groups.pop(f"stem:{stem}", None)
                if waiting is not None:
                    group.rows.extend(waiting.rows)

    def _settled(self, now: float) -> list[list[CdrRow]]:
        """The complete calls' CDRs (and, beyond `MAX_OPEN_CALLS`, the oldest open ones);
        groups without a caller CDR were no offered call and go."""
        done = [k for k, g in self._groups.items() if g.settles_at < now]
        excess = len(self._groups) - len(done) - MAX_OPEN_CALLS
        if excess > 0:
            gone = set(done)
            done += sorted((k for k in self._groups if k not in gone),
                           key=lambda k: self._groups[k].settles_at)[:excess]
        if not self.by_linkedid and done:
            gone = set(done)
            self._stems = {s: k for s, k in self._stems.items() if k not in gone}
        groups = [self._groups.pop(key) for key in done]
        return [g.rows for g in groups if g.has_caller]


class CdrSource(FileSource):
    """One CDR file's calls. Close it after use (or use `with`)."""

    def __init__(self, path: Path, table: Table, *, on_bad: BadRow | None = None,
                 tz: tzinfo | None = None) -> None:
        super().__init__(path, table, on_bad=on_bad, tz=tz)
        self.has_linkedid = "linkedid" in table.present

    def records(self, since: float, until: float | None,
                rules: TrackingRules) -> Iterator[CallRecord]:
        """The records of the calls offered at `since` <= time < `until` (None: no end),
        `source = "cdr"`, as their CDRs complete in the file. SourceUnavailable if the file
        cannot be read on the way."""
        grouper = _Grouper(rules, self.has_linkedid)
        for row in self._rows(since, until):
            for rows in grouper.add(row):
                yield from _offered(rows, rules, since, until)
        for rows in grouper.flush():
            yield from _offered(rows, rules, since, until)

    def latest_time(self) -> float | None:
        """The end of the file's last CDR (None: no readable row)."""
        return self._latest("end")

    def _rows(self, since: float, until: float | None) -> Iterator[CdrRow]:
        """CDRs that may belong to calls offered in the window: they are written as they end,
        so from the first one ending (a little before) `since`."""
        stop = None if until is None else until + MAX_CALL_SECONDS
        for position, where, values in self._rows_from("end", since - SETTLE_SECONDS):
            row = self._row(position, where, values)
            if row is None:
                continue
            if stop is not None and row.end >= stop:
                return
            if row.end >= since - SETTLE_SECONDS:
                yield row

    def _row(self, position: int, where: str, values: Values) -> CdrRow | None:
        start = self._read_time(where, values, "start")
        end = self._read_time(where, values, "end")
        answered = bool(values["answer"].strip())
        answer = self._read_time(where, values, "answer") if answered else None
        if start is None or end is None or (answered and answer is None):
            return None
        sequence = values["sequence"].strip()
        return CdrRow(start, answer, end, values["channel"], values["dcontext"], values["dst"],
                      values["uniqueid"], values["linkedid"], values["clid"], values["src"],
                      values["dstchannel"], values["lastapp"], values["lastdata"],
                      values["disposition"], int(sequence) if sequence.isdigit() else position,
                      where)


def _offered(rows: list[CdrRow], rules: TrackingRules, since: float,
             until: float | None) -> Iterator[CallRecord]:
    record = cdr_record(rows, rules)
    if record is not None and since <= record.offered_at and (
            until is None or record.offered_at < until):
        yield record


def open_cdr(path: str | Path, *, table: str = DEFAULT_TABLE, on_bad: BadRow | None = None,
             tz: tzinfo | None = None) -> CdrSource:
    """The CDR file at `path`: an SQLite file (table `table`, read-only) or a CSV file.
    CdrFormatError naming the file and the missing column; SourceUnavailable if it cannot be
    read. Times without an offset are in `tz`: by default this host's zone, and UTC for a
    Master.csv without a header line."""
    path = Path(path)
    opened = open_table(path, table, CDR_COLUMNS, layouts=MASTER_CSV_LAYOUTS,
                        headerless_hint=_HEADERLESS, error=CdrFormatError)
    if not opened.present & {"linkedid", "uniqueid"}:
        if isinstance(opened, SqliteTable):
            opened.close()
        raise CdrFormatError(path, "has no column 'linkedid' or 'uniqueid': a call's CDRs "
                                   "cannot be told apart (cdr.conf: loguniqueid = yes, "
                                   "newcdrcolumns = yes)")
    if isinstance(opened, CsvTable) and not opened.header and tz is None:
        tz = UTC
    return CdrSource(path, opened, on_bad=on_bad, tz=tz)


_HEADERLESS = ("botmeter reads a Master.csv without a header line in cdr_csv's layouts of "
               f"{', '.join(map(str, MASTER_CSV_LAYOUTS))} fields (with uniqueid: cdr.conf "
               "loguniqueid = yes); add a header line naming the columns")
