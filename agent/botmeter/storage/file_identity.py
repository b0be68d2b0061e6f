"""Whether a database path still leads to the file a connection opened.

A database deleted (`rm`) or replaced (`mv other.db botmeter.db`) under a running agent stays
open: SQLite goes on writing into the old file, which nobody will read again. The files are
told apart by device and inode: taken when the database is opened, compared before each
batch is stored. SQLite keeps the -wal and -shm files at the path; those of the old file are
removed before a new database is opened there, so that it never shares them (its WAL would
otherwise be read as the new file's).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

SIDECARS = ("-wal", "-shm")


@dataclass(frozen=True, slots=True)
class FileId:
    device: int
    inode: int


def file_id(path: Path) -> FileId | None:
    """The file at `path` (None: nothing there, or it cannot be looked at)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return FileId(info.st_dev, info.st_ino)


def sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def change(opened: FileId | None, now: FileId | None) -> str | None:
    """How the path changed since the file was opened, in words; None if it did not."""
    if opened is None or now == opened:
        return None
    return "deleted" if now is None else "replaced by another file"


@dataclass(frozen=True, slots=True)
class OpenedFiles:
    """A database file and its -wal and -shm files, as they were when it was opened."""

    path: Path
    main: FileId | None
    sidecars: tuple[FileId | None, ...]

    @classmethod
    def of(cls, path: Path) -> OpenedFiles:
        return cls(path, file_id(path), tuple(file_id(sidecar(path, s)) for s in SIDECARS))

    def change(self) -> str | None:
        """"deleted" or "replaced by another file" once the path no longer leads to the
        file opened; None while it does (one stat)."""
        return change(self.main, file_id(self.path))

    def discard_sidecars(self) -> None:
        """Remove the -wal and -shm files at the path that are still the ones opened with the
        database (another database's are left alone)."""
        for suffix, opened in zip(SIDECARS, self.sidecars, strict=True):
            path = sidecar(self.path, suffix)
            if opened is not None and file_id(path) == opened:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
