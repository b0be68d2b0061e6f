"""Reading Asterisk's CEL file by column name: `cel_sqlite3_custom`'s SQLite table or a CSV.

Columns are those of Asterisk's sample mapping (`eventtype, eventtime, cidname, cidnum,
cidani, cidrdnis, ciddnid, context, exten, channame, appname, appdata, amaflags, accountcode,
uniqueid, userfield, peer, userdeftype, eventextra`) plus `linkedid`. Required: `eventtype`,
`eventtime`, `uniqueid`, `linkedid`, `channame`; the others are read when present, any other
column is ignored. A CSV names its columns in a header line, or has none and is laid out as
`cel_custom`'s sample `Master.csv` mapping (deploy/asterisk/cel_custom.conf).

`eventtime` is epoch seconds with microseconds (cel.conf without `dateformat`, the default),
or a date and time as `dateformat` writes it (`%F %T`, in the PBX's local time; whole seconds
unless the format has a fraction). A row whose time cannot be read is reported and skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import tzinfo
from pathlib import Path

from .cel import BadRow, CelRow
from .file_source import FileSource, open_table
from .tables import ColumnSet, SourceFormatError, Values

CEL_COLUMNS = ColumnSet(
    required=("eventtype", "eventtime", "uniqueid", "linkedid", "channame"),
    optional=("cidname", "cidnum", "context", "exten", "appname", "appdata", "peer",
              "userdeftype", "eventextra"),
)
#: cel_custom's sample `Master.csv` mapping, which writes no header line
MASTER_CSV_COLUMNS = (
    "eventtype", "eventtime", "cidname", "cidnum", "cidani", "cidrdnis", "ciddnid", "exten",
    "context", "channame", "appname", "appdata", "amaflags", "accountcode", "uniqueid",
    "linkedid", "peer", "userfield", "userdeftype", "eventextra",
)
#: rows read before `since` (file order is event order only to within this many seconds)
SLACK_SECONDS = 60.0
DEFAULT_TABLE = "cel"


class CelFormatError(SourceFormatError):
    """A CEL file botmeter cannot read: names the file and the column (or what else is wrong)."""


class CelSource(FileSource):
    """The rows of one CEL file, streamed in file order. Close it after use (or use `with`)."""

    def rows(self, since: float, until: float | None = None) -> Iterator[CelRow]:
        """Rows with `since` <= time < `until` (None: to the end), in file order. An SQLite file
        is entered by binary search on its rowids, a little before `since`; a CSV is read from
        its start. SourceUnavailable if the file cannot be read on the way."""
        stop = None if until is None else until + SLACK_SECONDS
        for _, where, values in self._rows_from("eventtime", since - SLACK_SECONDS):
            row = self._row(where, values)
            if row is None:
                continue
            if stop is not None and row.ts >= stop:
                return
            if row.ts >= since and (until is None or row.ts < until):
                yield row

    def latest_time(self) -> float | None:
        """The time of the file's last row (None: no readable row)."""
        return self._latest("eventtime")

    def _row(self, where: str, values: Values) -> CelRow | None:
        ts = self._read_time(where, values, "eventtime")
        if ts is None:
            return None
        return CelRow(ts, values["eventtype"], values["uniqueid"], values["linkedid"],
                      values["channame"], values["context"], values["exten"], values["appname"],
                      values["appdata"], values["cidnum"], values["cidname"], values["peer"],
                      values["eventextra"], values["userdeftype"], where)


def open_cel(path: str | Path, *, table: str = DEFAULT_TABLE, on_bad: BadRow | None = None,
             tz: tzinfo | None = None) -> CelSource:
    """The CEL file at `path`: an SQLite file (table `table`, opened read-only) or a CSV file.
    CelFormatError naming the file and the missing column (or table); SourceUnavailable if it
    cannot be read. Times without a UTC offset are in `tz` (default: this host's zone)."""
    path = Path(path)
    opened = open_table(path, table, CEL_COLUMNS,
                        layouts={len(MASTER_CSV_COLUMNS): MASTER_CSV_COLUMNS},
                        headerless_hint=_HEADERLESS, error=CelFormatError)
    return CelSource(path, opened, on_bad=on_bad, tz=tz)


_HEADERLESS = (f"botmeter reads a CSV without a header line in the {len(MASTER_CSV_COLUMNS)} "
               "columns of cel_custom's sample Master.csv mapping (deploy/asterisk/"
               "cel_custom.conf); add a header line naming the columns, or use that mapping")
