"""Split the AMI byte stream into frames of headers, safely.

Asterisk sends `Key: Value` lines ending in CRLF, one blank line after each
message. This parser works on bytes, so a UTF-8 character split across TCP
reads stays whole; it caps what one frame may hold, so a peer that never
sends a blank line cannot grow memory without bound; and it never raises on
bad input: bad lines are counted and reported, not fatal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

Headers = dict[str, str]

#: the largest frame kept; a longer one is dropped up to its end
MAX_FRAME_BYTES = 256 * 1024

_BANNER = b"Asterisk Call Manager/"


def decode_text(raw: bytes) -> str:
    """UTF-8, and where a peer sent something else, Latin-1 rather than loss.

    Old SIP phones and trunks send caller names in Latin-1; an operator would
    rather see `Ünïcødé` than an empty name or replacement characters.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_frame(block: bytes, on_bad_line: Callable[[str], None] | None = None) -> Headers:
    """Headers of one frame (without its blank line). The first value of a key wins."""
    headers: Headers = {}
    text = decode_text(block)
    for line in text.split("\n"):
        if not line or line == "\r":
            continue
        key, sep, value = line.partition(":")
        if not sep or not key or " " in key:
            if on_bad_line is not None:
                on_bad_line(line[:80])
            continue
        if key not in headers:
            headers[key] = value.strip()
    return headers


@dataclass(slots=True)
class FrameStats:
    """What the parser had to throw away, for logs and tests."""

    frames: int = 0
    bad_lines: int = 0
    oversized_frames: int = 0
    last_bad: list[str] = field(default_factory=list)


class FrameParser:
    """Incremental AMI frame splitter: feed bytes, iterate frames."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._skipping = False
        self._max = max_frame
        self.banner: str | None = None
        self.stats = FrameStats()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Add bytes; yield every complete raw frame they finish."""
        buf = self._buf
        buf += data
        if self.banner is None and buf.startswith(_BANNER[: len(buf)]):
            end = buf.find(b"\n")
            if end < 0:
                return
            self.banner = decode_text(bytes(buf[:end])).strip()
            del buf[: end + 1]
        start = 0
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            elif end > start:
                self.stats.frames += 1
                yield bytes(buf[start:end])
            start = end + 4
        if start:
            del buf[:start]
        if len(buf) > self._max:
            # keep only a tail that could hold the start of the terminator
            self.stats.oversized_frames += int(not self._skipping)
            self._skipping = True
            del buf[:-3]

    def note_bad(self, line: str) -> None:
        self.stats.bad_lines += 1
        if len(self.stats.last_bad) < 5:
            self.stats.last_bad.append(line)


def event_name(raw: bytes) -> bytes | None:
    """The `Event:` value of a raw frame without parsing it, or None."""
    if raw.startswith(b"Event: "):
        end = raw.find(b"\r\n")
        return raw[7:end] if end >= 0 else raw[7:]
    return None
