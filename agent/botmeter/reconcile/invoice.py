"""Reading the vendor's usage detail file: CSV (UTF-8 with or without BOM; comma, tab or
semicolon) or JSON lines, mapped by `InvoiceMapping`, one `VendorLine` per line with its line
number.

A line that cannot be read becomes a `Problem` (file, line, what) and the others are read on:
one bad line never holds back the rest. Only a file that cannot be read at all, is not UTF-8
text, or lacks a column every line needs, stops the reconciliation (`InvoiceError`). Lines
and values are read in bounded pieces (`text.TextLines`, `lines.too_long`): memory does not
grow with a line or a field, whatever the file holds.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate, chain, islice
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

from .lines import FIELDS, LineError, LineReader, too_long
from .mapping import InvoiceMapping
from .text import LongRecord, TextLines

Row = tuple[str | None, ...]

#: problems kept with their text; beyond this only counted (a file of a million bad lines)
MAX_PROBLEMS = 1000
#: a line (a CSV record, a JSON line) longer than this is not usage detail
MAX_LINE = 64 * 1024
#: a JSON line nested deeper than this is not usage detail. Python's parser stops at the
#: recursion limit less the stack in use: refused beyond a fixed depth, a line reads the same
#: from any caller (the columnar reader's worker thread, the main thread)
MAX_DEPTH = 500
REQUIRED = ("caller_number", "started_at", "amount")
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
            ".tsv": "csv", ".txt": "csv"}
_DELIMITERS = (",", "\t", ";")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: a JSON string, or one not closed (to the end: the parser stops there); never backtracks
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
NOT_UTF8 = "not valid UTF-8 (read with replacement characters)"


def _line_of(problem: Problem) -> int:
    return problem.line or 0  # a problem of the whole file first


def _nesting(text: str) -> int:
    """How deep the JSON text nests (its brackets outside strings; as deep as Python's parser
    goes, or deeper, when the text is not JSON)."""
    brackets = _BRACKET.findall(_JSON_STRING.sub("", text))
    return max(accumulate(1 if b in "[{" else -1 for b in brackets), default=0)


def _spans(start: int, end: int) -> str:
    """What to add to a bad CSV record's problem when it runs over several lines."""
    return "" if end == start else f" (lines {start}-{end} read as one line: a quote not closed?)"


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """A CSV file's records after its header: the delimiter, the header's width, and `pick`
    (a row, with None appended, to its mapped fields in `FIELDS` order)."""

    reader: Iterator[list[str]]
    delimiter: str
    width: int
    positions: tuple[int, ...]  # each of FIELDS' column (`width`: none)
    pick: Callable[[list[str]], Row]


class NotColumnar(Exception):
    """The file is not one the column-wise reader (`columnar`) reads exactly as the
    line-by-line reader does: read it line by line."""


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
        """Keep it if fewer than MAX_PROBLEMS are kept, or if it is about the whole file (a
        few at most, and they explain the output: a column missing, calls not rated)."""
        self.count += 1
        if len(self.items) < MAX_PROBLEMS or problem.line is None:
            self.items.append(problem)


class Invoice:
    """An open usage detail file: `batches()` yields the lines it can read (VendorLine fields)
    and adds a Problem for each one it cannot."""

    def __init__(self, path: Path, mapping: InvoiceMapping, currency: str,
                 problems: Problems) -> None:
        self.path = path
        # shown and written as UTF-8: a file name's bytes that are not UTF-8 are shown as U+FFFD
        self.name = os.fsencode(path).decode("utf-8", "replace")
        self.mapping = mapping
        self.reader = LineReader(mapping, currency)
        self.problems = problems
        self.lines_read = 0  # every line but the header and blank ones, those set aside too
        self._header_line: int | None = None  # the header's (the first line's) number, once read
        self._waiting: list[Problem] = []  # the problems of the lines batched, not yet read

    def add_waiting_problems(self) -> None:
        """Add the problems of the lines batched so far, in line order (those found as the
        lines were split, then those found as their values were read), so that the problems
        kept (`MAX_PROBLEMS`) and their order do not depend on where a batch ends."""
        self._waiting.sort(key=_line_of)
        for problem in self._waiting:
            self.problems.add(problem)
        self._waiting.clear()

    def batches(self, size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """The readable lines in batches, each line a tuple of VendorLine's fields."""
        with self.open() as handle:
            lines, first, kind = self.start(handle)
            rows = (self._json_rows(lines, first) if kind == "jsonl"
                    else self._csv_rows(lines, first))
            while batch := list(islice(rows, size)):
                yield self.read_lines(batch)
        self.add_waiting_problems()  # those of the lines after the last batch

    def open(self) -> IO[str]:
        try:
            return self.path.open("r", encoding="utf-8-sig", errors="replace", newline="")
        except OSError as exc:
            raise InvoiceError(f"{self.name}: cannot read: {exc.strerror or exc}") from None

    def start(self, handle: IO[str]) -> tuple[TextLines, str, str]:
        """The file's lines, its first line that is not blank (the header of a CSV file), and
        its kind: `csv` or `jsonl`."""
        lines = TextLines(handle, MAX_LINE, self._long_line)
        first = lines.first()
        if first is None:
            raise InvoiceError(f"{self.name}: the file is empty")
        if "\x00" in first or first.startswith("\ufffd"):
            raise InvoiceError(
                f"{self.name}:{lines.number}: not UTF-8 text (UTF-16, another encoding, or "
                "not a text file at all): save the usage detail as UTF-8 (CSV or JSON lines)")
        self._header_line = lines.number
        kind = _FORMATS.get(self.path.suffix.lower())
        if first.lstrip()[:1] in ("{", "["):
            kind = "jsonl"
        elif kind is None:
            kind = "csv"
        return lines, first, kind

    def read_lines(self, batch: list[tuple[int, Row]]) -> list[tuple[Any, ...]]:
        """VendorLine fields of the lines that can be read; a problem for each other one. The
        problems of the lines batched so far are added then."""
        try:
            read = self.reader.read_batch(batch)
        except LineError:  # find the bad lines, one by one
            read = [line for number, fields in batch
                    if (line := self._read_one(number, fields)) is not None]
        self.add_waiting_problems()
        return read

    def checkpoint(self) -> tuple[int, int, int]:
        """What has been read so far, for `rewind`."""
        return len(self.problems.items), self.problems.count, self.lines_read

    def rewind(self, checkpoint: tuple[int, int, int]) -> None:
        """Forget what was read since `checkpoint` (to read the file again another way)."""
        kept, count, lines_read = checkpoint
        del self.problems.items[kept:]
        self._waiting.clear()
        self.problems.count, self.lines_read = count, lines_read

    def _long_line(self, number: int) -> None:
        if self._header_line is None:
            raise InvoiceError(f"{self.name}:{number}: the first line is longer than "
                               f"{MAX_LINE} characters: not a usage detail")
        self.lines_read += 1
        self._problem(number, f"longer than {MAX_LINE} characters")

    def _read_one(self, number: int, fields: Row) -> tuple[Any, ...] | None:
        try:
            return self.reader.read_batch([(number, fields)])[0]
        except LineError as exc:
            self._problem(number, str(exc))
            return None

    def _problem(self, line: int | None, message: str) -> None:
        """A problem of a line batched: it waits for the batch to be read. The problems kept
        are the first MAX_PROBLEMS by line, wherever batches end: of those waiting, only the
        first MAX_PROBLEMS by line can be, and the others are only counted."""
        self._waiting.append(Problem(self.name, line, message))
        if len(self._waiting) >= 2 * MAX_PROBLEMS:
            self._waiting.sort(key=_line_of)
            self.problems.count += len(self._waiting) - MAX_PROBLEMS
            del self._waiting[MAX_PROBLEMS:]

    def csv_header(self, first: str, lines: Iterable[str]) -> CsvLayout:
        """The CSV header's layout under the mapping (`first` is its first line); stops when a
        column every line needs is missing."""
        delimiter = max(_DELIMITERS, key=first.count)
        csv.field_size_limit(MAX_LINE)
        reader = csv.reader(chain([first], lines), delimiter=delimiter)
        try:
            header = next(reader)
        except (csv.Error, LongRecord) as exc:
            raise InvoiceError(f"{self.name}:{self._header_line}: no header line ({exc})"
                               ) from None
        positions = self._positions([name.strip() for name in header])
        width = len(header)
        # a field the mapping does not give reads the None appended to each row
        at = tuple(positions.get(name, width) for name in FIELDS)
        return CsvLayout(reader, delimiter, width, at, itemgetter(*at))

    def csv_fields(self, start: int, end: int, row: list[str], layout: CsvLayout) -> Row | None:
        """A CSV record's mapped fields (`FIELDS`), its first line `start` and last `end`;
        None when it is blank (not counted) or cannot be read (a problem)."""
        text = "".join(row)
        if not text or text.isspace():
            return None  # a blank line, or a row of empty fields a spreadsheet left
        self.lines_read += 1
        if len(row) != layout.width:
            self._problem(start, f"{len(row)} fields where the header has {layout.width}"
                                 + _spans(start, end))
            return None
        row.append(None)  # type: ignore[arg-type]
        fields: Row = layout.pick(row)
        if (message := too_long(fields)) is not None:
            self._problem(start, message)
            return None
        if "\ufffd" in text:
            self._problem(start, NOT_UTF8)
        return fields

    def _csv_rows(self, lines: TextLines, first: str) -> Iterator[tuple[int, Row]]:
        layout = self.csv_header(first, lines)
        while True:
            lines.record_done()
            try:
                row = next(layout.reader)
            except StopIteration:
                return
            except (csv.Error, LongRecord) as exc:
                self.lines_read += 1
                start = lines.record_start
                self._problem(start, (str(exc) if isinstance(exc, LongRecord)
                                      else f"not CSV: {exc}") + _spans(start, lines.number))
                continue
            start = lines.record_start
            if (fields := self.csv_fields(start, lines.number, row, layout)) is not None:
                yield start, fields

    def _positions(self, header: list[str]) -> dict[str, int]:
        """Field -> index of its column; a required column missing, or a mapped column named
        twice, stops everything."""
        index: dict[str, int] = {}
        for position, name in enumerate(header):
            index.setdefault(name, position)
        positions: dict[str, int] = {}
        for name, column in self.mapping.columns.named().items():
            if column in index:
                if header.count(column) > 1:
                    where = [str(i + 1) for i, other in enumerate(header) if other == column]
                    raise InvoiceError(
                        f"{self.name}:{self._header_line}: the header has {column!r} twice (columns "
                        f"{' and '.join(where[:2])}): which is the mapping's {name}?")
                positions[name] = index[column]
            elif name in REQUIRED or not self._duration_left(name, index):
                shown = ", ".join(repr(h[:60]) for h in header[:30])
                if any("\ufffd" in h for h in header):
                    shown += " (not UTF-8: save the usage detail as UTF-8)"
                raise InvoiceError(f"{self.name}:{self._header_line}: no column {column!r} (the "
                                   f"mapping's {name}); the header has {shown}")
            else:
                self._problem(self._header_line,
                              f"no column {column!r} (the mapping's {name}): read without it")
        return positions

    def _duration_left(self, name: str, index: dict[str, int]) -> bool:
        """Whether the line still has a duration without this missing column."""
        columns = self.mapping.columns
        if name == "seconds":
            return columns.minutes is not None and columns.minutes in index
        if name == "minutes":
            return columns.seconds is not None and columns.seconds in index
        return True

    def _json_rows(self, lines: TextLines, first: str) -> Iterator[tuple[int, Row]]:
        self.check_json_lines(first, lines.number)
        named = self.mapping.columns.named()
        for text in chain([first], lines):
            lines.record_done()
            if (fields := self.json_line(lines.number, text, named)) is not None:
                yield lines.number, fields

    def check_json_lines(self, first: str, number: int) -> None:
        """Stop at a JSON document (its first line `first`, line `number`) given for JSON
        lines."""
        if first.lstrip()[:1] == "[" or first.strip() == "{":
            raise InvoiceError(f"{self.name}:{number}: a JSON document, not JSON lines "
                               "(one object per line; `jq -c '.[]'` converts an array)")

    def json_line(self, number: int, text: str, named: dict[str, str]) -> Row | None:
        """A JSON line's mapped fields (`FIELDS`); None when it is blank (not counted) or
        cannot be read (a problem)."""
        if not text.strip():
            return None
        self.lines_read += 1
        if text.count("[") + text.count("{") > MAX_DEPTH and _nesting(text) > MAX_DEPTH:
            self._problem(number, "not JSON: nested too deeply")
            return None
        try:
            data = json.loads(text, parse_float=str, parse_int=str, parse_constant=str)
        except ValueError as exc:
            self._problem(number, f"not JSON: {exc}")
            return None
        except RecursionError:  # only from a stack already near the recursion limit
            self._problem(number, "not JSON: nested too deeply")
            return None
        if not isinstance(data, dict):
            self._problem(number, "not a JSON object")
            return None
        if (fields := self._json_fields(number, data, named)) is None:
            return None
        if (message := too_long(fields)) is not None:
            self._problem(number, message)
            return None
        replaced = "\ufffd" in text
        if "\\u" in text and any(_SURROGATE.search(v) for v in fields if v):
            # an escaped lone surrogate (valid JSON, no character): shown as U+FFFD
            fields = tuple(v and _SURROGATE.sub("\ufffd", v) for v in fields)
            replaced = True
        if replaced:
            self._problem(number, NOT_UTF8)
        return fields

    def _json_fields(self, number: int, data: dict[str, Any],
                     named: dict[str, str]) -> Row | None:
        """The mapped values of a JSON object as text, in FIELDS order; None (and a problem)
        when one is not a string, a number or null."""
        fields: dict[str, str | None] = {}
        for name, key in named.items():
            value: Any = data.get(key)
            if isinstance(value, dict | list | bool):
                kind = {dict: "object", list: "list", bool: "boolean"}[type(value)]
                self._problem(number, f"{name}: {key!r} holds a JSON {kind}")
                return None
            fields[name] = value
        return tuple(fields.get(name) for name in FIELDS)
