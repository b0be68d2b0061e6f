"""The invoice file as text lines read in bounded pieces, from a file or a pipe.

Memory never grows with a line: a line longer than `limit` is read through in pieces and
skipped (the reader is told its number), and a record that runs over several lines (a CSV
field quoted across line ends) stops at `limit` characters with `LongRecord`. A BOM at the
start of any line (two exports joined with `cat`) is not text. Line numbers count every line
of the file, the skipped ones too. Nothing is seeked, so `/dev/stdin` and `<(zcat ...)` work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO


class LongRecord(ValueError):
    """A record (lines read since `record_done()`) longer than the limit."""


class TextLines:
    """An iterator over the lines of `handle` (opened with newline=""), each at most `limit`
    characters; `on_long(number)` is called for each longer line, which is skipped."""

    def __init__(self, handle: IO[str], limit: int, on_long: Callable[[int], None]) -> None:
        self._readline = handle.readline
        self.limit = limit
        self.on_long = on_long
        self.number = 0  # the last line read
        self.record_start = 1  # the first line of the record being read
        self._record_chars = 0
        self._next = ""  # a line read ahead (to see whether an LF follows a CR)

    def __iter__(self) -> TextLines:
        return self

    def __next__(self) -> str:
        while True:
            line, self._next = self._next or self._readline(self.limit), ""
            if not line:
                raise StopIteration
            self.number += 1
            if self._record_chars == 0:
                self.record_start = self.number
            if len(line) == self.limit and line[-1] != "\n":
                if line[-1] == "\r":  # the limit may cut a CR LF in two
                    longer = self._lf_after_cr()
                else:
                    self._read_through()
                    longer = True
                if longer:
                    self.on_long(self.number)
                    continue
            self._record_chars += len(line)
            if self._record_chars > self.limit:
                self._record_chars = 0
                raise LongRecord(f"longer than {self.limit} characters")
            return line.lstrip("\ufeff") if line[0] == "\ufeff" else line

    def record_done(self) -> None:
        """The record read so far is complete: the next line starts another."""
        self._record_chars = 0

    def first(self) -> str | None:
        """The first line that is not blank (None for a file of blank lines), as a record."""
        for line in self:
            self.record_done()
            if line.strip():
                return line
        return None

    def _lf_after_cr(self) -> bool:
        """After a piece of `limit` characters ending in CR: whether an LF follows (it is read
        then; else the next line is, and kept for `next`)."""
        after = self._readline(self.limit)
        if after == "\n":
            return True
        self._next = after
        return False

    def _read_through(self) -> None:
        while (piece := self._readline(self.limit)) and len(piece) == self.limit \
                and piece[-1] != "\n":
            if piece[-1] == "\r":
                self._lf_after_cr()
                return
