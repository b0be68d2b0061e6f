"""Reading a table of Asterisk's by column name: an SQLite table or a CSV file.

Asterisk's CEL and CDR backends write rows into an SQLite table (`cel_sqlite3_custom`,
`cdr_sqlite3_custom`: `AcctId INTEGER PRIMARY KEY`, so the rowid grows with every row) or
into CSV files (`cel_custom`, `cdr_csv`, with or without a header line). The file is
Asterisk's and is being written while it is read: SQLite files are opened read-only
(`mode=ro`), never written, never given an index; each page of rows is one short read, so
Asterisk's writer (which waits `busy_timeout`, 1 s by default) is never held up for long.

Rows come out as `(position, values)`: the rowid (SQLite) or the line number (CSV), and the
wanted columns by their lower-case name ("" for an optional column the file lacks).
Undecodable text is read as Latin-1, as AMI text is (`pbx.ami_frames.decode_text`).
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

from ..pbx.ami_frames import decode_text

Values = dict[str, str]
Row = tuple[int, Values]
#: rows read per query: each page is one short read lock on Asterisk's file
PAGE_ROWS = 500
#: how long a read waits for Asterisk's writer to let go of the file (milliseconds)
BUSY_TIMEOUT_MS = 5000
_SQLITE_MAGIC = b"SQLite format 3\x00"


class SourceError(Exception):
    """A CEL or CDR file that cannot be used: names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class SourceFormatError(SourceError):
    """The file is not laid out as botmeter reads it (a column or table missing, not SQLite or
    CSV): fixing it takes a change of Asterisk's configuration or of botmeter's."""


class SourceUnavailable(SourceError):
    """The file cannot be read now: missing, not readable by this user, locked, damaged."""


@dataclass(frozen=True, slots=True)
class ColumnSet:
    """The columns a reader wants: all of `required`, any of `optional`."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def wanted(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


def is_sqlite(path: Path) -> bool:
    """Whether the file starts like an SQLite database; SourceUnavailable if it cannot be read."""
    try:
        with path.open("rb") as file:
            return file.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError as exc:
        raise SourceUnavailable(path, _os_reason(exc)) from None


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied (botmeter's user must be able to read it; see the README)"
    return f"cannot read it: {exc.strerror or exc}"


def _missing(names: Mapping[str, str], columns: ColumnSet, path: Path, where: str) -> None:
    for column in columns.required:
        if column not in names:
            raise SourceFormatError(path, f"{where}has no column {column!r} (botmeter reads "
                                          f"these by name: {', '.join(columns.required)})")


class SqliteTable:
    """One table of an SQLite file Asterisk writes, read-only, in rowid order."""

    def __init__(self, path: Path, table: str, columns: ColumnSet, *,
                 page_rows: int = PAGE_ROWS, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path, self.page_rows = path, page_rows
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        try:
            self._conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000,
                                         check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise SourceUnavailable(path, f"cannot open it: {exc}") from None
        self._conn.text_factory = decode_text
        try:
            self._conn.execute("PRAGMA query_only = 1")
            tables = [str(r[0]) for r in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            found = [name for name in tables if name.lower() == table.lower()]
            if not found:
                raise SourceFormatError(path, f"has no table {table!r} (its tables: "
                                              f"{', '.join(tables) or 'none'})")
            self.table = found[0]
            info = self._conn.execute(f"PRAGMA table_info({_quoted(self.table)})").fetchall()
        except sqlite3.Error as exc:
            self.close()
            raise SourceUnavailable(path, f"cannot read it: {exc}") from None
        except SourceError:
            self.close()
            raise
        names = {str(row[1]).lower(): str(row[1]) for row in info}
        try:
            _missing(names, columns, path, f"table {self.table!r} ")
        except SourceError:
            self.close()
            raise
        self._names = [c for c in columns.wanted if c in names]
        self.present = frozenset(self._names)
        self._absent = {c: "" for c in columns.wanted if c not in names}
        self._select = ", ".join(["rowid", *(_quoted(names[c]) for c in self._names)])

    def close(self) -> None:
        self._conn.close()

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise SourceUnavailable(self.path, f"cannot read it: {exc}") from None

    def _values(self, row: tuple[object, ...]) -> Row:
        values = {name: "" if v is None else str(v) for name, v in zip(self._names, row[1:],
                                                                          strict=True)}
        return int(str(row[0])), values | self._absent

    def rows(self, after: int = 0) -> Iterator[Row]:
        """Rows with a rowid above `after`, in rowid order, a page per query (no lock is held
        between pages; rows Asterisk adds meanwhile come too)."""
        while True:
            page = self._query(f"SELECT {self._select} FROM {_quoted(self.table)} WHERE rowid > ? "
                               "ORDER BY rowid LIMIT ?", (after, self.page_rows))
            for row in page:
                position, values = self._values(row)
                after = position
                yield position, values
            if len(page) < self.page_rows:
                return

    def start_before(self, key: Callable[[Values], float | None], target: float) -> int:
        """A rowid to read `rows(after=...)` from so that no row whose `key` is at least
        `target` is missed, found by binary search over the rowids (the key, a time, grows
        with the rowid: rows are written as events happen). Rows whose key is None (cannot be
        read) are stepped over."""
        bounds = self._query(f"SELECT min(rowid), max(rowid) FROM {_quoted(self.table)}", ())
        low, high = bounds[0] if bounds else (None, None)
        if low is None or high is None:
            return 0
        lo, hi = int(str(low)), int(str(high)) + 1  # the first row with key >= target is in [lo, hi)
        while lo < hi:
            mid = (lo + hi) // 2
            probe = self._probe(mid, hi, key)
            if probe is None:  # nothing readable from mid on
                hi = mid
            elif probe[1] < target:
                lo = probe[0] + 1
            else:
                hi = mid
        return lo - 1

    def _probe(self, start: int, stop: int, key: Callable[[Values], float | None],
               ) -> tuple[int, float] | None:
        """The first row at or after `start` (below `stop`) with a readable key."""
        while start < stop:
            page = self._query(f"SELECT {self._select} FROM {_quoted(self.table)} WHERE rowid >= ? "
                               "AND rowid < ? ORDER BY rowid LIMIT 16", (start, stop))
            if not page:
                return None
            for row in page:
                position, values = self._values(row)
                value = key(values)
                if value is not None:
                    return position, value
            start = position + 1
        return None

    def last(self, key: Callable[[Values], float | None], scan: int = 64) -> float | None:
        """The key of the last rows (the first readable one among the last `scan`)."""
        page = self._query(f"SELECT {self._select} FROM {_quoted(self.table)} ORDER BY rowid DESC "
                           "LIMIT ?", (scan,))
        for row in page:
            value = key(self._values(row)[1])
            if value is not None:
                return value
        return None


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class CsvTable:
    """A CSV file Asterisk writes: with a header line naming the columns, or without one, in
    one of the `layouts` Asterisk's own configuration gives (chosen by the number of fields)."""

    def __init__(self, path: Path, columns: ColumnSet, *,
                 layouts: Mapping[int, tuple[str, ...]] | None = None,
                 headerless_hint: str = "") -> None:
        self.path, self.columns = path, columns
        records = self._records()
        first = next(records, None)
        records.close()
        fields = [] if first is None else [f.strip().lower() for f in first[1]]
        if first is None or any(c in fields for c in columns.wanted):  # a header line
            self.names, self.header = tuple(fields), True
        else:
            layout = (layouts or {}).get(len(fields))
            if layout is None:
                raise SourceFormatError(path, f"no header line, and {len(fields)} fields a line: "
                                              f"{headerless_hint or 'add a header line'}")
            self.names, self.header = layout, False
        if first is not None:  # an empty file (nothing written yet) has no rows to read
            _missing({n: n for n in self.names}, columns, path,
                     "header line " if self.header else "layout ")
        self.present = frozenset(self.names) & frozenset(columns.wanted)

    def _records(self) -> Generator[tuple[int, list[str]], None, None]:
        try:
            with self.path.open("rb") as file:
                reader = csv.reader(_lines(file))
                for record in reader:
                    yield reader.line_num, record
        except OSError as exc:
            raise SourceUnavailable(self.path, _os_reason(exc)) from None
        except csv.Error as exc:
            raise SourceFormatError(self.path, f"not CSV: {exc}") from None

    def rows(self) -> Iterator[Row]:
        """Every data row, in file order (a field a short line lacks is "")."""
        wanted = self.columns.wanted
        index = {name: i for i, name in reversed(list(enumerate(self.names)))}
        records = self._records()
        if self.header:
            next(records, None)
        for line, record in records:
            if not record:
                continue
            yield line, {c: record[index[c]] if c in index and index[c] < len(record) else ""
                         for c in wanted}


def _lines(file: IO[bytes]) -> Iterator[str]:
    for raw in file:
        yield decode_text(raw)
