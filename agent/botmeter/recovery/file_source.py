"""What the CEL and CDR sources share: one of Asterisk's files opened as a table (SQLite or
CSV), its times read in a time zone, the rows whose time cannot be read reported and skipped."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import tzinfo
from pathlib import Path

from .cel import BadRow
from .tables import (
    ColumnSet,
    CsvTable,
    SourceFormatError,
    SqliteTable,
    Values,
    is_sqlite,
)
from .times import BadTime, parse_time

Table = SqliteTable | CsvTable


def open_table(path: Path, table: str, columns: ColumnSet, *,
               layouts: Mapping[int, tuple[str, ...]], headerless_hint: str,
               error: type[SourceFormatError]) -> Table:
    """The file as a table: SQLite (table `table`, read-only) or CSV (a header line, else one
    of `layouts`). `error` (naming the file and the column) if it is not laid out so;
    SourceUnavailable if it cannot be read."""
    try:
        if is_sqlite(path):
            return SqliteTable(path, table, columns)
        return CsvTable(path, columns, layouts=layouts, headerless_hint=headerless_hint)
    except SourceFormatError as exc:
        raise error(exc.path, exc.reason) from None


def _ignore(_where: str, _reason: str) -> None:
    return None


class FileSource:
    """One of Asterisk's files, read in file order. Close it after use (or use `with`)."""

    def __init__(self, path: Path, table: Table, *, on_bad: BadRow | None = None,
                 tz: tzinfo | None = None) -> None:
        self.path, self._table, self._tz = path, table, tz
        self._on_bad = on_bad or _ignore
        self.bad_rows = 0

    @property
    def kind(self) -> str:
        """"sqlite" or "csv"."""
        return "sqlite" if isinstance(self._table, SqliteTable) else "csv"

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if isinstance(self._table, SqliteTable):
            self._table.close()

    def _rows_from(self, column: str, start: float) -> Iterator[tuple[int, str, Values]]:
        """(position, where, values) of the rows in file order: an SQLite file from the first row whose
        `column` (a time that grows with the rowid) is `start` or later, found by binary
        search; a CSV file from its start."""
        table = self._table
        if isinstance(table, SqliteTable):
            after = table.start_before(lambda values: self._time(values, column), start)
            for position, values in table.rows(after=after):
                yield position, f"{self.path} row {position}", values
        else:
            for position, values in table.rows():
                yield position, f"{self.path} line {position}", values

    def _latest(self, column: str) -> float | None:
        """The time in `column` of the file's last readable row (None: none)."""
        table = self._table
        if isinstance(table, SqliteTable):
            return table.last(lambda values: self._time(values, column))
        latest = None
        for _, values in table.rows():
            latest = self._time(values, column) or latest
        return latest

    def _time(self, values: Values, column: str) -> float | None:
        try:
            return parse_time(values[column], self._tz)
        except BadTime:
            return None

    def _read_time(self, where: str, values: Values, column: str) -> float | None:
        """The row's time in `column`; None, reported (the row is to be skipped), if it cannot
        be read."""
        try:
            return parse_time(values[column], self._tz)
        except BadTime as exc:
            self.bad_rows += 1
            self._on_bad(where, f"{column}: {exc}")
            return None
