"""From AMI bytes to typed events: the one decoding path for live, replay and benchmarks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import structlog

from .ami_frames import FrameParser, event_name, parse_frame
from .events import TRACKED_EVENTS, BadValue, PbxEvent, from_ami

log = structlog.get_logger(__name__)


class BadValues:
    """Counts refused AMI header values and logs each one, up to `log_limit` per header (a
    misconfigured PBX that sends a bad `Timestamp` on every event must not flood the log)."""

    def __init__(self, log_limit: int = 20) -> None:
        self.counts: Counter[str] = Counter()
        self._limit = log_limit

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __call__(self, event: str, header: str, value: str, used_instead: str) -> None:
        self.counts[header] += 1
        seen = self.counts[header]
        if seen > self._limit:
            return
        extra = {"note": f"further bad {header} values are counted, not logged"} \
            if seen == self._limit else {}
        log.warning("bad AMI header value refused", header=header, value=_clip(value),
                    ami_event=event, used=used_instead, **extra)


def _clip(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def decode_event(raw: bytes, now: float, on_bad_line: Callable[[str], None] | None = None,
                 on_bad_value: BadValue | None = None) -> PbxEvent | None:
    """The typed event of one raw frame, or None (not an event, or nothing tracking needs)."""
    name = event_name(raw)
    if name is None or name not in TRACKED_EVENTS:
        return None
    return from_ami(parse_frame(raw, on_bad_line), now, on_bad_value)


class AmiEventDecoder:
    """Feed raw AMI bytes; get the typed events tracking needs, skipping the rest unparsed."""

    def __init__(self, parser: FrameParser | None = None,
                 bad_values: BadValues | None = None, *, capture: bool = False) -> None:
        """`capture`: the bytes are a recording (replay), so an event without a believable
        `Timestamp` takes the last believable one before it, not `now` (the wall clock)."""
        self.parser = parser or FrameParser()
        self.bad_values = bad_values or BadValues()
        self.skipped = 0
        self._capture = capture
        self._last: float | None = None

    def feed(self, data: bytes, now: float) -> Iterator[PbxEvent]:
        tracked = TRACKED_EVENTS
        bad_values = self.bad_values
        capture = self._capture
        for raw in self.parser.feed(data):
            name = event_name(raw)
            if name is None:
                if not raw.startswith(b"Response: "):
                    self.parser.note_junk(raw)
                continue
            if name not in tracked:
                self.skipped += 1
                continue
            if capture and self._last is not None:
                now = self._last
            event = from_ami(parse_frame(raw, self.parser.note_bad), now, bad_values)
            if event is not None:
                if capture:
                    self._last = event.ts
                yield event


def decode_capture(chunks: Iterable[bytes], now: float = 0.0) -> Iterator[PbxEvent]:
    """Typed events of a whole raw AMI capture (banner and responses are passed over)."""
    decoder = AmiEventDecoder(capture=True)
    for chunk in chunks:
        yield from decoder.feed(chunk, now)
