"""From AMI bytes to typed events: the one decoding path for live, replay and benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from .ami_frames import FrameParser, event_name, parse_frame
from .events import TRACKED_EVENTS, PbxEvent, from_ami


def decode_event(raw: bytes, now: float, on_bad_line: Callable[[str], None] | None = None) -> PbxEvent | None:
    """The typed event of one raw frame, or None (not an event, or nothing tracking needs)."""
    name = event_name(raw)
    if name is None or name not in TRACKED_EVENTS:
        return None
    return from_ami(parse_frame(raw, on_bad_line), now)


class AmiEventDecoder:
    """Feed raw AMI bytes; get the typed events tracking needs, skipping the rest unparsed."""

    def __init__(self, parser: FrameParser | None = None) -> None:
        self.parser = parser or FrameParser()
        self.skipped = 0

    def feed(self, data: bytes, now: float) -> Iterator[PbxEvent]:
        tracked = TRACKED_EVENTS
        for raw in self.parser.feed(data):
            name = event_name(raw)
            if name is None:
                if not raw.startswith(b"Response: "):
                    self.parser.note_junk(raw)
                continue
            if name not in tracked:
                self.skipped += 1
                continue
            event = from_ami(parse_frame(raw, self.parser.note_bad), now)
            if event is not None:
                yield event


def decode_capture(chunks: Iterable[bytes], now: float = 0.0) -> Iterator[PbxEvent]:
    """Typed events of a whole raw AMI capture (banner and responses are passed over)."""
    decoder = AmiEventDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk, now)
