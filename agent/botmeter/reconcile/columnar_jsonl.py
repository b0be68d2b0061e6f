"""The invoice's JSON lines read a few thousand at a time into columns: each line parsed by
orjson (some ten times as fast as the standard library's json), its mapped values checked and
converted column-wise by `columnar.plain_lines`.

`jsonl_batches(invoice, handle)` gives what `Invoice.batches()` would for a JSON-lines file,
line for line and problem for problem. A line is read here when orjson reads it as an object
whose mapped values are strings, nulls or whole numbers other than 0 (whose text is `str` of
the number; `-0` is not) and it holds no literal U+FFFD and at most MAX_DEPTH brackets (nested
no deeper than the line-by-line reader reads); any other line, a blank one included, goes to
`Invoice.json_line`, the line-by-line reader's own code, with its text as that reader sees
it. What orjson parses, the standard library parses to the same values (valid JSON, the last
of repeated keys); what orjson refuses (NaN, lone surrogates, numbers beyond 64 bits, bad
JSON) is the line-by-line reader's to read or refuse.

Line numbers must count as `TextLines` counts them: a file with a carriage return not before a
line feed, a BOM after its start, bytes that are not UTF-8 or a line near MAX_LINE is declined
(`NotColumnar`), possibly after some batches: the caller reads it all again line by line.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from itertools import islice
from operator import itemgetter
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .columnar import SCHEMA, plain_lines
from .invoice import MAX_DEPTH, MAX_LINE, Invoice, NotColumnar
from .lines import FIELDS, MAX_VALUE

#: bytes read at a time (then on to the end of a line)
BLOCK = 1 << 20
#: lines read at a time: their values are in Python till the batch is read
LINES_AT_ONCE = 10_000
_BOM = b"\xef\xbb\xbf"
_REPLACEMENT = "\ufffd".encode()
_NOTHING: dict[str, Any] = {}  # what an odd line's values are read from: none


def jsonl_batches(invoice: Invoice, handle: IO[bytes]) -> Iterator[pa.RecordBatch]:
    """The lines of `handle` (the invoice file opened in binary, at its start) as batches of
    `SCHEMA`, their problems added to `invoice` in line order. Raises NotColumnar."""
    keys = invoice.mapping.columns.named()  # one key a field (InvoiceMapping checks)
    texts = _Texts(keys)
    first = 1
    for chunk, replaced in _chunks(handle):
        # its lines LINES_AT_ONCE at a time: a chunk of short lines is 500,000 Python objects
        # (split at LF only: a lone CR is declined)
        lines_of = io.BytesIO(chunk)
        while lines := list(islice(lines_of, LINES_AT_ONCE)):
            if max(map(len, lines)) >= MAX_LINE - 2:
                raise NotColumnar("a line near the length limit")
            yield from _batch(invoice, texts, lines, first, replaced)
            first += len(lines)


def _chunks(handle: IO[bytes]) -> Iterator[tuple[bytes, bool]]:
    """The file's whole lines, about BLOCK bytes of them at a time, checked for what would
    number them otherwise than `TextLines` does or read them otherwise than as UTF-8; and
    whether U+FFFD is written in them."""
    first = True
    while chunk := handle.read(BLOCK):
        if first:
            chunk, first = chunk.removeprefix(_BOM), False
        if not chunk.endswith(b"\n"):
            rest = handle.readline(MAX_LINE)
            chunk += rest
            if rest and not rest.endswith(b"\n") and len(rest) == MAX_LINE:
                raise NotColumnar("a line near the length limit")
        if chunk.count(b"\r") != chunk.count(b"\r\n") or _BOM in chunk:
            raise NotColumnar("a lone carriage return or a BOM inside")
        try:
            chunk.decode()
        except UnicodeDecodeError:
            raise NotColumnar("not UTF-8") from None
        yield chunk, _REPLACEMENT in chunk


def _batch(invoice: Invoice, texts: _Texts, lines: list[bytes], first: int,
           replaced: bool) -> Iterator[pa.RecordBatch]:
    """Lines numbered from `first`: those orjson reads alike read column-wise, then the others
    by the line-by-line reader's code (`odd`) or the LineReader."""
    parsed, odd = _parsed(lines, replaced)
    field = texts.read(parsed, odd)
    for text in field.values():  # too long: the line-by-line reader names the field
        if text is not None:
            odd.update(pc.indices_nonzero(pc.greater(pc.utf8_length(text), MAX_VALUE))
                       .to_pylist())
    count = len(lines)
    plain = pa.array([index not in odd for index in range(count)] if odd else [True] * count,
                     pa.bool_())
    columnwise, others = plain_lines(
        invoice, {name: None if text is None else pc.fill_null(text, "")
                  for name, text in field.items()},
        pa.array(range(first, first + count), pa.int64()), plain)
    if columnwise.num_rows:
        yield columnwise
    read_here = [index for index in others.to_pylist() if index not in odd]
    at = pa.array(read_here, pa.int64())
    values = [[None] * len(read_here) if text is None else text.take(at).to_pylist()
              for text in field.values()]
    invoice.lines_read += len(read_here)
    rows = [(first + index, row)
            for index, row in zip(read_here, zip(*values, strict=True), strict=True)]
    for index in sorted(odd):
        number = first + index
        if (row := invoice.json_line(number, lines[index].decode(), texts.keys)) is not None:
            rows.append((number, row))
    rows.sort(key=itemgetter(0))
    read = invoice.read_lines(rows) if rows else []
    if read:
        yield pa.RecordBatch.from_arrays(
            [pa.array(column, kind) for column, kind in zip(
                zip(*read, strict=True), SCHEMA.types, strict=True)], schema=SCHEMA)
    invoice.add_waiting_problems()


def _parsed(lines: list[bytes], replaced: bool) -> tuple[list[dict[str, Any]], set[int]]:
    """Each line's object as orjson reads it; and the odd lines, whose values are not read
    here (nothing is read from them): not an object to orjson (not JSON, blank, or JSON that
    Python's parser may read otherwise), U+FFFD written in them, nested too deeply."""
    odd: set[int] = set()
    try:
        parsed: list[Any] = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        parsed = []
        for index, line in enumerate(lines):
            try:
                parsed.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                parsed.append(_NOTHING)
                odd.add(index)
    if set(map(type, parsed)) != {dict}:
        odd.update(index for index, data in enumerate(parsed) if type(data) is not dict)
    if replaced:
        odd.update(index for index, line in enumerate(lines) if _REPLACEMENT in line)
    long = 2 * MAX_DEPTH  # nesting as deep needs as many bytes
    if max(map(len, lines)) > long:  # maybe nested too deeply: the line-by-line reader says
        odd.update(index for index, line in enumerate(lines)
                   if len(line) > long and line.count(b"{") + line.count(b"[") > MAX_DEPTH)
    for index in odd:
        parsed[index] = _NOTHING
    return parsed, odd


class _Texts:
    """The mapped values of the lines of a batch, as text columns (`FIELDS` order). Values
    all strings or null are converted by Arrow, the keys that were so in the last batch at
    once; the others in Python (`_as_text`)."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys
        self.named = {name: keys.get(name) for name in FIELDS}
        self._text = set(keys.values())  # the keys whose values were all text last time

    def read(self, parsed: list[dict[str, Any]], odd: set[int]) -> dict[str, pa.Array | None]:
        """The lines' values, by field; a line with a value that is not text is made `odd`."""
        together = [key for key in self.named.values() if key in self._text]
        try:
            both = pa.array(parsed, pa.struct([(key, pa.string()) for key in together]))
            read = {key: both.field(i) for i, key in enumerate(together)}
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            read = {}
        self._text = set(read) or self._text  # none: each key on its own
        field: dict[str, pa.Array | None] = {}
        for name, key in self.named.items():
            if key is None:
                field[name] = None
            elif key in read:
                field[name] = read[key]
            else:
                field[name] = self._alone(parsed, key, odd)
        return field

    def _alone(self, parsed: list[dict[str, Any]], key: str, odd: set[int]) -> pa.Array:
        try:
            text = pa.array(parsed, pa.struct([(key, pa.string())])).field(0)
            self._text.add(key)
            return text
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            self._text.discard(key)
        return pa.array(_as_text(_values(parsed, key), odd), pa.string())


def _values(parsed: list[dict[str, Any]], key: str) -> list[Any]:
    """Each object's value of `key` (None without it)."""
    try:
        return list(map(itemgetter(key), parsed))  # when every line has it: the fast way
    except KeyError:
        return [data.get(key) for data in parsed]


def _as_text(column: list[Any], odd: set[int]) -> list[str | None]:
    """Values as the text Python's parser gives them (`parse_int=str`): whole numbers but 0
    (whose text may be `-0`); any other value's line is odd."""
    if set(map(type, column)) == {int} and 0 not in column:
        return list(map(str, column))  # a column of whole numbers: the fast way
    texts: list[str | None] = []
    for index, value in enumerate(column):
        kind = type(value)
        if kind is str or value is None:
            texts.append(value)
        elif kind is int and value != 0:
            texts.append(str(value))
        else:
            texts.append(None)
            odd.add(index)
    return texts
