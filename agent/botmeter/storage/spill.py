"""The spill file: calls that could not be stored before a stop, kept for the next start.

`<db>.spill.jsonl` sits next to the database: one JSON object per line, appended and fsynced,
mode 0600. The next command that stores calls (`run`, `replay`) reads it before anything
else, stores its calls (a call stored again replaces its row, so a load cut short and done
again stores each call once) and only then removes it. Appending and removing take an
exclusive `flock`, so a spill appended while another process loads the file is kept.

A record is written so that it reads back exactly: floats as JSON numbers (shortest repr,
exact), module quantities as Decimal strings, everything else as is.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from ..tracking.record import _NO_MODULES, CallRecord, Csat, ModuleUsage

SPILL_SUFFIX = ".spill.jsonl"
FORMAT = 1


def spill_path(db: str | Path) -> Path | None:
    """The spill file of a database (None for an in-memory one)."""
    if str(db) == ":memory:":
        return None
    return Path(f"{db}{SPILL_SUFFIX}")


# -- records as JSON ------------------------------------------------------------------

def encode_record(record: CallRecord) -> str:
    """One line of JSON that `decode_record` turns back into an equal record."""
    fields = record._asdict()
    fields["modules"] = {name: [str(usage.quantity), usage.unit]
                         for name, usage in record.modules.items()}
    fields["csat"] = None if record.csat is None else list(record.csat)
    return json.dumps({"v": FORMAT, "call": fields}, ensure_ascii=False, separators=(",", ":"))


def decode_record(line: str) -> CallRecord:
    """The record of one spill line; ValueError (or KeyError/TypeError) if it is not one."""
    data = json.loads(line)
    if not (isinstance(data, dict) and data.get("v") == FORMAT
            and isinstance(data.get("call"), dict)):
        raise ValueError("not a botmeter spill record")
    fields = dict(data["call"])
    # a field the record gained since the line was written (an upgrade between a stop and the
    # next start) takes its default; any other difference means it is no record
    wrong = (set(fields) - set(CallRecord._fields)) | (
        set(CallRecord._fields) - set(fields) - set(CallRecord._field_defaults))
    if wrong:
        raise ValueError(f"fields {sorted(wrong)} do not match")
    modules = fields["modules"]
    fields["modules"] = {str(name): ModuleUsage(Decimal(quantity), str(unit))
                         for name, (quantity, unit) in modules.items()} or _NO_MODULES
    csat = fields["csat"]
    fields["csat"] = None if csat is None else Csat(int(csat[0]), int(csat[1]))
    return CallRecord(**fields)


# -- the file ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class UnreadableLine:
    number: int
    text: str
    reason: str


@dataclass(frozen=True, slots=True)
class SpillContents:
    """What a spill file held when read: its calls, lines that were not calls, its size."""

    records: list[CallRecord] = field(default_factory=list)
    unreadable: list[UnreadableLine] = field(default_factory=list)
    size: int = 0


def append_spill(path: Path, records: Iterable[CallRecord]) -> int:
    """Append records to the spill file and fsync it; returns how many. OSError if it cannot."""
    lines = [encode_record(r) + "\n" for r in records]
    if not lines:
        return 0
    data = "".join(lines).encode("utf-8")
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not _still_at(fd, path):  # removed or replaced by a load meanwhile: reopen
                continue
            created = os.fstat(fd).st_size == 0
            os.fchmod(fd, 0o600)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            sync_dir(path.parent)
        return len(lines)


def read_spill(path: Path) -> SpillContents:
    """The spill file's calls (an empty result if there is none). A torn last line (a crash
    while appending) and any other line that is not a call are returned as unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return SpillContents()
    records: list[CallRecord] = []
    unreadable: list[UnreadableLine] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        text = raw.decode("utf-8", "replace")
        try:
            records.append(decode_record(text))
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as exc:
            unreadable.append(UnreadableLine(number, text, f"{type(exc).__name__}: {exc}"))
    return SpillContents(records, unreadable, len(data))


def clear_spill(path: Path, contents: SpillContents) -> None:
    """Drop what `read_spill` returned (once its calls are stored): remove the file, or, if
    lines were appended since it was read, keep only those."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not _still_at(fd, path):
            return
        size = os.fstat(fd).st_size
        if size <= contents.size:
            path.unlink()
        else:
            with open(os.dup(fd), "rb") as current:
                current.seek(contents.size)
                rest = current.read()
            fresh = path.with_name(path.name + ".tmp")
            tmp = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _write_all(tmp, rest)
                os.fsync(tmp)
            finally:
                os.close(tmp)
            os.replace(fresh, path)
    finally:
        os.close(fd)
    sync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _still_at(fd: int, path: Path) -> bool:
    """Whether the open file is still the one at `path`."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def sync_dir(directory: Path) -> None:
    """Make a file's creation, renaming or removal in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
