"""Reading the vendor's usage detail file: CSV (UTF-8 with or without BOM, comma or tab) or
JSON lines, mapped by `InvoiceMapping`, one `VendorLine` per line with its line number.

A line that cannot be read becomes a `Problem` (file, line, what) and the others are read on:
one bad line never holds back the rest. Only a file that cannot be read at all, or that lacks
a column every line needs, stops the reconciliation (`InvoiceError`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

from .lines import FIELDS, LineError, LineReader, VendorLine
from .mapping import InvoiceMapping

Row = tuple[str | None, ...]

#: problems kept with their text; beyond this only counted (a file of a million bad lines)
MAX_PROBLEMS = 1000
#: a CSV field or JSON line longer than this is not usage detail
MAX_FIELD = 64 * 1024
REQUIRED = ("caller_number", "started_at", "amount")
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
            ".tsv": "csv", ".txt": "csv"}


class InvoiceError(Exception):
    """The invoice cannot be reconciled at all: names the file (and line) and the reason."""


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with one line (or the file when `line` is None)."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


@dataclass
class Problems:
    """The problems found, the first MAX_PROBLEMS kept; `count` has them all."""

    items: list[Problem] = field(default_factory=list)
    count: int = 0

    def add(self, problem: Problem) -> None:
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(problem)


class Invoice:
    """An open usage detail file: `lines()` yields a VendorLine for each line it can read and
    adds a Problem for each one it cannot."""

    def __init__(self, path: Path, mapping: InvoiceMapping, currency: str,
                 problems: Problems) -> None:
        self.path = path
        self.name = str(path)
        self.mapping = mapping
        self.reader = LineReader(mapping, currency)
        self.problems = problems
        self.lines_read = 0

    def lines(self) -> Iterator[VendorLine]:
        """Every line that can be read, one at a time."""
        for batch in self.batches():
            for line in batch:
                yield VendorLine(*line)

    def batches(self, size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """The readable lines in batches, each line a tuple of VendorLine's fields."""
        try:
            handle = self.path.open("r", encoding="utf-8-sig", errors="replace", newline="")
        except OSError as exc:
            raise InvoiceError(f"{self.name}: cannot read: {exc.strerror or exc}") from None
        with handle:
            head = handle.read(4096)
            handle.seek(0)
            if self.path.stat().st_size == 0 or not head.strip():
                raise InvoiceError(f"{self.name}: the file is empty")
            kind = _FORMATS.get(self.path.suffix.lower())
            if kind is None or kind == "json" or head.lstrip()[:1] == "{":
                kind = "jsonl" if head.lstrip()[:1] == "{" else "csv"
            rows = self._json_rows(handle) if kind == "jsonl" else self._csv_rows(handle, head)
            while batch := list(islice(rows, size)):
                self.lines_read += len(batch)
                try:
                    yield self.reader.read_batch(batch)
                except LineError:  # find the bad lines, one by one
                    yield [line for number, fields in batch
                           if (line := self._read_one(number, fields)) is not None]

    def _read_one(self, number: int, fields: Row) -> tuple[Any, ...] | None:
        try:
            return self.reader.read_batch([(number, fields)])[0]
        except LineError as exc:
            self._problem(number, str(exc))
            return None

    def _problem(self, line: int | None, message: str) -> None:
        self.problems.add(Problem(self.name, line, message))

    def _csv_rows(self, handle: IO[str], head: str) -> Iterator[tuple[int, Row]]:
        first = head.splitlines()[0] if head else ""
        delimiter = "\t" if first.count("\t") > first.count(",") else ","
        csv.field_size_limit(MAX_FIELD)
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader)
        except (csv.Error, StopIteration) as exc:
            raise InvoiceError(f"{self.name}:1: no header line ({exc})") from None
        positions = self._positions([name.strip() for name in header])
        width = len(header)
        # a field the mapping does not give reads the None appended to each row
        pick = itemgetter(*(positions.get(name, width) for name in FIELDS))
        number = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                self._problem(number, f"not CSV: {exc}")
                number = reader.line_num + 1
                continue
            start, number = number, reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                self._problem(start, f"{len(row)} fields where the header has {width}")
                continue
            if "\ufffd" in "".join(row):
                self._problem(start, "not valid UTF-8 (read with replacement characters)")
            row.append(None)  # type: ignore[arg-type]
            yield start, pick(row)

    def _positions(self, header: list[str]) -> dict[str, int]:
        """Field -> index of its column; a required column missing stops everything."""
        index: dict[str, int] = {}
        for position, name in enumerate(header):
            index.setdefault(name, position)
        positions: dict[str, int] = {}
        for name, column in self.mapping.columns.named().items():
            if column in index:
                positions[name] = index[column]
            elif name in REQUIRED or not self._duration_left(name, index):
                shown = ", ".join(repr(h) for h in header[:30])
                raise InvoiceError(f"{self.name}:1: no column {column!r} (the mapping's "
                                   f"{name}); the header has {shown}")
            else:
                self._problem(1, f"no column {column!r} (the mapping's {name}): read without it")
        return positions

    def _duration_left(self, name: str, index: dict[str, int]) -> bool:
        """Whether the line still has a duration without this missing column."""
        columns = self.mapping.columns
        if name == "seconds":
            return columns.minutes is not None and columns.minutes in index
        if name == "minutes":
            return columns.seconds is not None and columns.seconds in index
        return True

    def _json_rows(self, handle: IO[str]) -> Iterator[tuple[int, Row]]:
        named = self.mapping.columns.named()
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            if len(text) > MAX_FIELD:
                self._problem(number, f"longer than {MAX_FIELD} characters")
                continue
            try:
                data = json.loads(text, parse_float=str, parse_int=str)
            except ValueError as exc:
                self._problem(number, f"not JSON: {exc}")
                continue
            if not isinstance(data, dict):
                self._problem(number, "not a JSON object")
                continue
            fields: dict[str, str | None] = {}
            bad = False
            for name, key in named.items():
                value: Any = data.get(key)
                if isinstance(value, dict | list):
                    self._problem(number, f"{name}: {key!r} holds a JSON {type(value).__name__}")
                    bad = True
                    break
                fields[name] = None if value is None else str(value)
            if not bad:
                if "\ufffd" in text:
                    self._problem(number, "not valid UTF-8 (read with replacement characters)")
                yield number, tuple(fields.get(name) for name in FIELDS)

