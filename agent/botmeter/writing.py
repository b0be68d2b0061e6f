"""Writing an output file so that a reader never sees half of it: a temporary file beside it,
renamed into place once complete (stdout when no file is given)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

#: the files SQLite keeps beside a database
DATABASE_FILES = ("", "-wal", "-shm", "-journal")


@contextmanager
def atomic_text(out: str | None) -> Iterator[TextIO]:
    """A UTF-8 text stream: stdout, or a temporary file renamed to `out` (mode 0644) when the
    block ends without an error, removed when it raises. OSError when it cannot be written."""
    if out is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(out)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
    try:
        with open(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_file_named(out: str, reads: Iterable[tuple[str, str | Path]],
                    database: str | Path | None = None) -> tuple[str, str] | None:
    """Which of the files a command reads (`reads`: what, path; and the database with its
    -wal, -shm and -journal) `out` would overwrite, symlinks followed; None for none."""
    files = list(reads)
    if database is not None:
        base = os.path.realpath(database)
        files += [("calls database", base + suffix) for suffix in DATABASE_FILES]
    target = os.path.realpath(out)
    for what, path in files:
        if target == os.path.realpath(path):
            return what, str(path)
    return None
