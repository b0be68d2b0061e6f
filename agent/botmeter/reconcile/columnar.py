"""The invoice's CSV read column by column with Apache Arrow: a million lines in about a
second, where the line-by-line reader (`Invoice.batches`) takes several.

`arrow_batches(invoice)` gives what `Invoice.batches()` would, line for line and problem for
problem, as record batches of the vendor table's columns (`SCHEMA`). It takes only files it
can read exactly so: a regular CSV file with no quote character, no NUL, no lone carriage
return and no BOM but the first, its header on the first line, its lines well short of
MAX_LINE and all as wide as the header, times in ISO 8601 (no `time_format`). Any other file,
or one found to be other half way, raises `NotColumnar`: the caller rewinds the invoice and
reads it line by line from the start.

Within a batch, a line whose values all have a plain form is read column-wise: its time is
ISO 8601 (`T` or a space, whole seconds or up to milliseconds, then `Z`, `+hh:mm` or nothing
for the mapping's zone) and its session id printable ASCII; its caller, duration, amount and
currency (the mapping's, without a column), which repeat, are read by the `LineReader` once for
each distinct text. A line with any other value is read by the `LineReader` alone, problem and
all, a few thousand lines at a time.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Generator, Iterator
from datetime import datetime, timedelta
from functools import reduce
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .callers import MIN_DIGITS
from .invoice import MAX_LINE, CsvLayout, Invoice, NotColumnar
from .lines import FIELDS, MAX_VALUE, SHOWN_DIGITS, LineError, LineReader

#: the vendor table's columns (matching.VENDOR_SCHEMA), as the batches carry them
SCHEMA = pa.schema([
    ("id", pa.int64()), ("session_id", pa.string()), ("caller", pa.string()),
    ("ckey", pa.string()), ("started", pa.string()), ("t", pa.int64()), ("dur", pa.int64()),
    ("dur_field", pa.string()), ("dur_text", pa.string()), ("amount", pa.string()),
    ("micro", pa.int64()),
])
#: bytes Arrow reads at a time: a batch is some 16,000 lines of a typical export
BLOCK = 1 << 20
#: the other lines of a batch given to the LineReader at a time (a batch of short bad lines
#: is some 200,000 lines: all at once as Python objects, many times what it holds otherwise)
LINES_AT_ONCE = 5000
_BOM = b"\xef\xbb\xbf"
_REPLACEMENT = "\ufffd".encode()
_ISO = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,3})?"
        r"(?:Z|[+-][0-9]{2}:[0-9]{2})?$")
#: a session id kept as written: printable ASCII, no space first or last
_SESSION = r"^[!-~](?:[ -~]*[!-~])?$"
#: PLAIN_GLOB as a regular expression
_PLAIN = "[1-9][0-9]*"
#: years read column-wise (others, if valid at all, go to the LineReader), in milliseconds
_EPOCH = datetime(1970, 1, 1)
_MILLISECOND = timedelta(milliseconds=1)
_YEARS_MS = tuple((datetime(year, 1, 1) - _EPOCH) // _MILLISECOND for year in (1971, 3000))
#: the time put in place of one not of the form, so that all can be read at once
_SOME_TIME = "1970-01-01T00:00:00"


def arrow_batches(invoice: Invoice) -> Generator[pa.RecordBatch, None, None]:
    """The invoice's readable lines as batches of `SCHEMA`, its problems added to it as
    `Invoice.batches()` adds them. Raises NotColumnar (possibly after some batches)."""
    if invoice.reader.time_format is not None:
        raise NotColumnar("times are read with a time_format")
    try:
        before = _version(invoice.path)
    except OSError:
        raise NotColumnar("cannot stat it") from None  # the line-by-line reader says why
    if not stat.S_ISREG(before[0]):
        raise NotColumnar("not a regular file")
    with invoice.open() as handle:
        lines, first, kind = invoice.start(handle)
        if kind == "jsonl":
            invoice.check_json_lines(first, lines.number)
    if kind == "jsonl":
        from .columnar_jsonl import jsonl_batches  # it builds on this module

        try:
            with invoice.path.open("rb") as binary:
                yield from jsonl_batches(invoice, binary)
        except OSError as exc:
            raise NotColumnar(str(exc)) from None  # the line-by-line reader says why
    else:
        if lines.number != 1:
            raise NotColumnar("a CSV header not on the first line")
        yield from _csv_batches(invoice, first)
    if _version(invoice.path) != before:  # the bytes checked may not be those read
        raise NotColumnar("the file changed while it was read")
    invoice.add_waiting_problems()  # the header's, when every line was plain


def _csv_batches(invoice: Invoice, first: str) -> Iterator[pa.RecordBatch]:
    """The CSV file's batches, by Arrow's CSV reader (its header, `first`, on line 1)."""
    if invoice.name != str(invoice.path):
        raise NotColumnar("a file name that is not UTF-8")  # Arrow takes UTF-8 names only
    try:
        replaced = _plain_bytes(invoice.path)
    except OSError:
        raise NotColumnar("cannot read it") from None  # the line-by-line reader says why
    layout = invoice.csv_header(first, ())
    if layout.width < 2:
        raise NotColumnar("a single column")
    names = [str(i) for i in range(layout.width)]
    try:
        reader = pacsv.open_csv(
            invoice.path,
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=names, block_size=BLOCK),
            parse_options=pacsv.ParseOptions(delimiter=layout.delimiter, quote_char=False,
                                             newlines_in_values=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                                 strings_can_be_null=False, check_utf8=True))
    except (pa.ArrowInvalid, OSError) as exc:
        raise NotColumnar(str(exc)) from None
    try:
        number = 2  # the first line after the header
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            yield from _lines(invoice, layout, batch, number, replaced)
            number += batch.num_rows
    except (pa.ArrowInvalid, OSError) as exc:  # a line of another width, bytes not UTF-8
        raise NotColumnar(str(exc)) from None
    finally:  # here, in this thread: Arrow's reading ahead must not outlive it (at exit)
        reader.close()


def _version(path: Path) -> tuple[int, int, int, int]:
    """What tells a file, and a change of it: its kind, inode, size and modification time."""
    status = path.stat()
    return status.st_mode, status.st_ino, status.st_size, status.st_mtime_ns


def _plain_bytes(path: Path) -> bool:
    """Check the bytes for what Arrow would read otherwise than the line-by-line reader;
    return whether U+FFFD is written in them."""
    replaced = False
    tail = b""
    with path.open("rb") as handle:
        chunk = handle.read(BLOCK).removeprefix(_BOM)
        while chunk:
            if chunk.endswith(b"\r"):  # keep a CR LF in one chunk
                chunk += handle.read(1)
            if (b'"' in chunk or b"\x00" in chunk or _BOM in tail + chunk
                    or chunk.count(b"\r") != chunk.count(b"\r\n")):
                raise NotColumnar("quotes, NUL, a lone carriage return or a BOM inside")
            replaced = replaced or _REPLACEMENT in tail + chunk
            tail = chunk[-2:]
            chunk = handle.read(BLOCK)
    return replaced


def _lines(invoice: Invoice, layout: CsvLayout, batch: pa.RecordBatch, first: int,
           replaced: bool) -> Iterator[pa.RecordBatch]:
    """One batch of the file's lines, numbered from `first`: the plain ones read here, then
    the others read by the LineReader."""
    columns = batch.columns
    widths = reduce(pc.add, [pc.utf8_length(column) for column in columns])
    if (pc.max(widths).as_py() or 0) + layout.width >= MAX_LINE - 2:
        raise NotColumnar("a line near the length limit")  # its numbering is the slow path's
    field = dict(zip(FIELDS, (columns[i] if i < layout.width else None
                              for i in layout.positions), strict=True))
    plain = pa.array([True] * batch.num_rows, pa.bool_())
    if replaced:
        for column in columns:
            plain = pc.and_(plain, pc.invert(pc.match_substring(column, "\ufffd")))
    numbers = pa.array(range(first, first + batch.num_rows), pa.int64())
    columnwise, others = plain_lines(invoice, field, numbers, plain)
    if columnwise.num_rows:
        yield columnwise
    for start in range(0, len(others), LINES_AT_ONCE):  # Python's memory: a few at a time
        lines = _line_by_line(invoice, layout, columns, others[start:start + LINES_AT_ONCE],
                              first)
        if lines.num_rows:
            yield lines


def plain_lines(invoice: Invoice, field: dict[str, pa.Array | None], numbers: pa.Array,
                plain: pa.Array) -> tuple[pa.RecordBatch, pa.Array]:
    """Lines (their `numbers`), given as the text of each field (`FIELDS`; None for a
    field the mapping does not give; an empty text for a missing value): those `plain` whose
    values all have a plain form, read (a batch of `SCHEMA`, counted in `lines_read`); and
    the positions of the others, for the LineReader."""
    count = len(plain)
    for column in field.values():
        if column is not None:
            plain = pc.and_(plain, pc.less_equal(pc.utf8_length(column), MAX_VALUE))
    read = invoice.reader

    session = field["session_id"]
    if session is None:
        session = pa.nulls(count, pa.string())
    else:
        empty = pc.equal(session, "")
        plain = pc.and_(plain, pc.or_(empty, pc.match_substring_regex(session, _SESSION)))
        session = pc.if_else(empty, pa.scalar(None, pa.string()), session)

    if (currency := field["currency"]) is not None:
        plain = pc.and_(plain, _each(currency, _checked(read.check_currency), ())[0])
    elif not _reads(read.check_currency, None):  # the mapping's currency, not the plan's
        plain = pc.and_(plain, False)
    caller, started, amount_text = (_required(field, name)
                                    for name in ("caller_number", "started_at", "amount"))
    ok, (shown, key) = _callers(caller, read)
    plain = pc.and_(plain, ok)
    ok, (dur, dur_field, dur_text) = _each(
        _joined(field["seconds"], field["minutes"]), _duration(read.duration),
        (pa.int64(), pa.string(), pa.string()))
    plain = pc.and_(plain, ok)
    ok, (amount, micro) = _each(amount_text, lambda raw: read.decimal("amount", raw),
                                (pa.string(), pa.int64()))
    plain = pc.and_(plain, ok)
    t, ok = epoch_ms(started, read.zone)
    plain = pc.fill_null(pc.and_(plain, ok), False)

    columnwise = pa.RecordBatch.from_arrays(
        [numbers, session, shown, key, started, t, dur, dur_field, dur_text, amount, micro],
        schema=SCHEMA).filter(plain)
    invoice.lines_read += columnwise.num_rows
    return columnwise, pc.indices_nonzero(pc.invert(plain))


def _line_by_line(invoice: Invoice, layout: CsvLayout, columns: list[pa.Array],
                  rows: pa.Array, first: int) -> pa.RecordBatch:
    """The lines at `rows` read as the line-by-line reader reads them."""
    values = [column.take(rows).to_pylist() for column in columns]
    read = []
    for index, row in zip(rows.to_pylist(), zip(*values, strict=True), strict=True):
        number = first + index
        if (fields := invoice.csv_fields(number, number, list(row), layout)) is not None:
            read.append((number, fields))
    lines = invoice.read_lines(read) if read else []
    return pa.RecordBatch.from_arrays(
        [pa.array(column, kind) for column, kind in zip(
            zip(*lines, strict=True) if lines else [()] * len(SCHEMA), SCHEMA.types,
            strict=True)], schema=SCHEMA)


def _callers(column: pa.Array, read: LineReader) -> tuple[pa.Array, list[pa.Array]]:
    """Each line's caller as shown and its key (`LineReader.caller`): a plain national number
    (PLAIN_GLOB) or one written `+<country code><plain national number>` read here; any other
    text by the LineReader, once per distinct text."""
    national = pc.match_substring_regex(column, f"^{_PLAIN}$")
    cc = read.country
    international = (pc.match_substring_regex(column, rf"^\+{cc}{_PLAIN}$") if cc
                     else pa.array([False] * len(column), pa.bool_()))
    here = pc.and_(pc.or_(national, international),
                   pc.less_equal(pc.utf8_length(column), SHOWN_DIGITS))
    digits = pc.if_else(national, column,
                        pc.utf8_slice_codeunits(column, 1 + len(cc or "")))
    key = pc.if_else(pc.greater_equal(pc.utf8_length(digits), MIN_DIGITS), digits,
                     pa.scalar(None, pa.string()))
    ok, (shown_there, key_there) = _each(pc.if_else(here, "", column), read.caller,
                                         (pa.string(), pa.string()))
    return pc.or_(here, ok), [pc.if_else(here, column, shown_there),
                              pc.if_else(here, key, key_there)]


def _required(field: dict[str, pa.Array | None], name: str) -> pa.Array:
    column = field[name]
    assert column is not None, f"the header has the required {name}"  # Invoice._positions
    return column


#: separates the two duration columns in one text (a value holding it is not read here)
_UNIT = "\x1f"


def _joined(seconds: pa.Array | None, minutes: pa.Array | None) -> pa.Array:
    """The two duration columns as one text, seconds _UNIT minutes (an absent one empty: the
    LineReader reads an empty value as a missing one)."""
    return pc.binary_join_element_wise(seconds if seconds is not None else "",
                                       minutes if minutes is not None else "", _UNIT)


def _duration(read: Callable[[str | None, str | None], tuple[int, str, str]]
              ) -> Callable[[str], tuple[int, str, str]]:
    def joined(both: str) -> tuple[int, str, str]:
        seconds, *minutes = both.split(_UNIT)
        if len(minutes) != 1:
            raise LineError("a duration holding the separator")  # read by the LineReader
        return read(seconds, minutes[0])
    return joined


def _reads(check: Callable[[str | None], None], raw: str | None) -> bool:
    try:
        check(raw)
    except LineError:
        return False
    return True


def _checked(check: Callable[[str], None]) -> Callable[[str], tuple[()]]:
    def read(raw: str) -> tuple[()]:
        check(raw)
        return ()
    return read


def _each(column: pa.Array, read: Callable[[Any], tuple[Any, ...]],
          kinds: tuple[pa.DataType, ...]) -> tuple[pa.Array, list[pa.Array]]:
    """`read` each distinct text of `column` once: whether it read (LineError: it did not)
    and the parts it gave (of `kinds`), per line. Texts longer than MAX_VALUE are not read
    (their lines are the LineReader's, which says so): no cache of the reader keeps them."""
    distinct = pc.unique(column)
    short = pc.less_equal(pc.utf8_length(distinct), MAX_VALUE).to_pylist()
    ok: list[bool] = []
    parts: list[tuple[Any, ...] | None] = []
    for raw, readable in zip(distinct.to_pylist(), short, strict=True):
        if not readable:
            parts.append(None)
            ok.append(False)
            continue
        try:
            parts.append(read(raw))
            ok.append(True)
        except LineError:
            parts.append(None)
            ok.append(False)
    index = pc.index_in(column, value_set=distinct)
    return pc.take(pa.array(ok, pa.bool_()), index), [
        pc.take(pa.array([None if p is None else p[i] for p in parts], kind), index)
        for i, kind in enumerate(kinds)]


def epoch_ms(started: pa.Array, zone: ZoneInfo | None) -> tuple[pa.Array, pa.Array]:
    """ISO 8601 times (`_ISO`) in epoch milliseconds, as `LineReader.moment` reads them
    (without an offset: in `zone`); and whether each was read here (not when other, or
    not a valid date and time in the years read here)."""
    plain = pc.fill_null(pc.match_substring_regex(started, _ISO), False)
    text = pc.if_else(plain, started, _SOME_TIME)
    utc = pc.ends_with(text, "Z")
    wall = pc.utf8_rtrim(text, "Z")  # the date and time, without their offset
    last6 = pc.utf8_slice_codeunits(text, -6)
    numeric = pc.or_(pc.starts_with(last6, "+"), pc.starts_with(last6, "-"))
    written: Any = 0
    if pc.any(numeric).as_py():
        wall = pc.if_else(numeric, pc.utf8_slice_codeunits(text, 0, -6), wall)
        offset_text = pc.if_else(numeric, last6, "+00:00")
        hours, minutes = _digits(offset_text, 1, 3), _digits(offset_text, 4, 6)
        written = pc.multiply(pc.if_else(pc.starts_with(offset_text, "-"), -1, 1),
                              pc.add(pc.multiply(hours, 3600), pc.multiply(minutes, 60)))
        plain = pc.and_(plain, pc.and_(pc.less_equal(hours, 23), pc.less_equal(minutes, 59)))
    local, valid = _wall_ms(wall)
    valid = reduce(pc.and_, [valid, plain, pc.greater_equal(local, _YEARS_MS[0]),
                             pc.less(local, _YEARS_MS[1])])
    naive = pc.invert(pc.or_(utc, numeric))
    # only valid dates: another (year 0, day 32 of 9999-12) is no time Python has
    wall_minutes = pc.if_else(pc.and_(naive, valid), pc.divide(local, 60_000),
                              pa.scalar(None, pa.int64()))
    in_zone, zone_ok = _zone_offsets(wall_minutes, zone)
    offset = pc.if_else(utc, 0, pc.if_else(naive, in_zone, written))
    valid = pc.and_(valid, pc.or_(pc.invert(naive), zone_ok))
    return pc.subtract(local, pc.multiply(offset, 1000)), pc.fill_null(valid, False)


def _digits(text: pa.Array, start: int, stop: int) -> pa.Array:
    """The number written at [start, stop) of each text (digits there)."""
    return pc.cast(pc.utf8_slice_codeunits(text, start, stop), pa.int64())


def _wall_ms(wall: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Dates and times without an offset (`_ISO`'s form less its offset), in milliseconds
    since 1970-01-01T00:00 on the same clock; and whether each is a date and time at all.
    Arrow's cast reads them (and refuses what Python refuses) when all are; else Python does,
    each time."""
    try:
        return pc.cast(pc.cast(wall, pa.timestamp("ms")), pa.int64()), pc.is_valid(wall)
    except pa.ArrowInvalid:  # a day 31 of a short month, an hour 24...
        pass
    millis, valid = [], []
    for text in wall.to_pylist():
        try:
            millis.append((datetime.fromisoformat(text) - _EPOCH) // _MILLISECOND)
            valid.append(True)
        except ValueError:
            millis.append(0)
            valid.append(False)
    return pa.array(millis, pa.int64()), pa.array(valid, pa.bool_())


def _zone_offsets(local_minutes: pa.Array, zone: ZoneInfo | None
                  ) -> tuple[pa.Array, pa.Array]:
    """The zone's UTC offset (seconds) of each local wall-clock minute, as Python gives it to
    a time of that minute (the earlier of a repeated hour); and whether it holds for the
    whole minute (not when the clocks change within it, nor without a zone)."""
    if zone is None:
        count = len(local_minutes)
        return pa.nulls(count, pa.int64()), pa.array([False] * count, pa.bool_())
    distinct = pc.unique(pc.drop_null(local_minutes))
    offsets, whole = [], []
    epoch = datetime(1970, 1, 1)
    for minutes in distinct.to_pylist():
        wall = (epoch + timedelta(minutes=minutes)).replace(tzinfo=zone)
        at_start, at_end = wall.utcoffset(), wall.replace(second=59).utcoffset()
        offsets.append(int(at_start.total_seconds()) if at_start is not None else 0)
        whole.append(at_start == at_end)
    index = pc.index_in(local_minutes, value_set=distinct)
    return (pc.take(pa.array(offsets, pa.int64()), index),
            pc.fill_null(pc.take(pa.array(whole, pa.bool_()), index), False))
