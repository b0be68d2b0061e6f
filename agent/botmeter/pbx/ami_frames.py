"""Split the AMI byte stream into frames of headers, safely.

Asterisk sends `Key: Value` lines ending in CRLF, one blank line after each
message. This parser works on bytes, so a UTF-8 character split across TCP
reads stays whole; it caps what the banner and one frame may hold, so a peer
that never sends a newline or a blank line cannot grow memory without bound;
and it never raises on bad input: what it throws away is counted (with a
sample) for `DiscardReport` to log, not fatal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

Headers = dict[str, str]

#: the largest frame kept; a longer one is dropped up to its end
MAX_FRAME_BYTES = 256 * 1024
#: the longest banner line (`Asterisk Call Manager/9.0.0`); a longer one is dropped like a frame
MAX_BANNER_BYTES = 4096
#: at most one log line about discarded input per this many seconds (and one at disconnect)
REPORT_SECONDS = 60.0

_BANNER = b"Asterisk Call Manager/"
_CRLF = b"\r\n"  # a stray blank line before a frame belongs to no frame


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

    bad_lines: int = 0
    oversized_frames: int = 0  # an endless banner counts as one
    junk_frames: int = 0  # frames that are neither an event nor a response
    discarded_bytes: int = 0  # of oversized and junk frames
    last_bad: list[str] = field(default_factory=list)
    sample: str = ""  # the start of the first thing discarded since the last report

    def note_sample(self, raw: bytes | bytearray) -> None:
        if not self.sample:
            self.sample = repr(bytes(raw[:60]))[2:-1]


class DiscardReport:
    """When to log what a parser threw away: at once the first time, then at most once per
    `interval` (and at `final`, the connection's end), each time what was discarded since the
    last line. An oversized frame is reported once it ended (or after `interval`), with all its
    bytes. Pure: the caller gives the time."""

    def __init__(self, interval: float = REPORT_SECONDS) -> None:
        self._interval = interval
        self._last: float | None = None
        self._waiting_since: float | None = None
        self._seen = (0, 0, 0, 0)

    def due(self, parser: FrameParser, now: float, *, final: bool = False) -> dict[str, object] | None:
        """The summary to log now (counts since the last one and a sample), or None."""
        stats = parser.stats
        counts = (stats.bad_lines, stats.oversized_frames, stats.junk_frames, stats.discarded_bytes)
        if counts == self._seen:
            return None
        if not final:
            if self._waiting_since is None:
                self._waiting_since = now
            waited = now - self._waiting_since >= self._interval
            if parser.skipping and not waited:
                return None
            if self._last is not None and now - self._last < self._interval:
                return None
        before, self._seen = self._seen, counts
        self._last, self._waiting_since = now, None
        sample, stats.sample = stats.sample, ""
        return {"bad_lines": counts[0] - before[0], "oversized_frames": counts[1] - before[1],
                "junk_frames": counts[2] - before[2], "discarded_bytes": counts[3] - before[3],
                "sample": sample}


class FrameParser:
    """Incremental AMI frame splitter: feed bytes, iterate frames."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._skipping = False
        self._long_banner = False  # dropping a banner line too long to be one
        self._max = max_frame
        self.banner: str | None = None
        self.stats = FrameStats()

    @property
    def skipping(self) -> bool:
        """In the middle of dropping an oversized frame (or a banner too long to be one)."""
        return self._skipping or self._long_banner

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Add bytes; yield every complete raw frame they finish."""
        buf = self._buf
        buf += data
        stats = self.stats
        if self.banner is None and buf.startswith(_BANNER[: len(buf)]):
            end = buf.find(b"\n", 0, MAX_BANNER_BYTES)
            if end >= 0:
                self.banner = decode_text(bytes(buf[:end])).strip()
                del buf[: end + 1]
            elif len(buf) < MAX_BANNER_BYTES:
                return
            else:  # too long for a banner: dropped up to the end of its line
                self.banner = ""
                stats.oversized_frames += 1
                stats.note_sample(buf)
                self._long_banner = True
        if self._long_banner:
            end = buf.find(b"\n")
            if end < 0:
                stats.discarded_bytes += len(buf)
                buf.clear()
                return
            stats.discarded_bytes += end + 1
            del buf[: end + 1]
            self._long_banner = False
        start = 0
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
                stats.discarded_bytes += end + 4 - start
            elif end > start:
                frame = bytes(buf[start:end])
                yield frame.lstrip(b"\r\n") if frame[0] in _CRLF else frame
            start = end + 4
        if start:
            del buf[:start]
        if self._skipping or len(buf) > self._max:
            if not self._skipping:
                stats.oversized_frames += 1
                stats.note_sample(buf)
                self._skipping = True
            # keep only a tail that could hold the start of the terminator
            if len(buf) > 3:
                stats.discarded_bytes += len(buf) - 3
                del buf[:-3]

    def note_bad(self, line: str) -> None:
        self.stats.bad_lines += 1
        self.stats.note_sample(line.encode("utf-8", "replace"))
        if len(self.stats.last_bad) < 5:
            self.stats.last_bad.append(line)

    def note_junk(self, raw: bytes) -> None:
        """A whole frame that is neither an event nor a response (garbage between frames)."""
        self.stats.junk_frames += 1
        self.stats.discarded_bytes += len(raw) + 4
        self.stats.note_sample(raw)


def event_name(raw: bytes) -> bytes | None:
    """The `Event:` value of a raw frame without parsing it, or None."""
    if raw.startswith(b"Event: "):
        end = raw.find(b"\r\n")
        return raw[7:end] if end >= 0 else raw[7:]
    return None
