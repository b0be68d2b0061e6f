"""The AMI byte stream parser against bad input."""

from __future__ import annotations

import os

from botmeter.pbx.ami_frames import MAX_FRAME_BYTES, FrameParser, decode_text, parse_frame
from botmeter.pbx.events import ChannelCreated, from_ami
from botmeter.pbx.stream import AmiEventDecoder

NEWCHANNEL = (
    "Event: Newchannel\r\nTimestamp: 1795706734.859002\r\nChannel: SIP/a-00000001\r\n"
    "CallerIDNum: 139\r\nCallerIDName: 张三\r\nContext: from-pstn\r\nExten: 4000\r\n"
    "Uniqueid: 1.1\r\nLinkedid: 1.1\r\n\r\n"
).encode()


def _events(*chunks: bytes):
    decoder = AmiEventDecoder()
    return [e for c in chunks for e in decoder.feed(c, 0.0)], decoder


def test_banner_and_frames_split_anywhere():
    data = b"Asterisk Call Manager/9.0.0\r\n" + NEWCHANNEL * 3
    for size in (1, 2, 3, 13):
        parser = FrameParser()
        frames = [f for i in range(0, len(data), size) for f in parser.feed(data[i:i + size])]
        assert len(frames) == 3 and parser.banner == "Asterisk Call Manager/9.0.0"
        assert parse_frame(frames[0])["CallerIDName"] == "张三"


def test_frame_without_colon_lines_keeps_the_good_headers():
    bad = NEWCHANNEL.replace(b"Exten: 4000\r\n", b"garbage line\r\nExten: 4000\r\n")
    events, decoder = _events(bad)
    [event] = events
    assert isinstance(event, ChannelCreated) and event.exten == "4000"
    assert decoder.parser.stats.bad_lines == 1


def test_binary_garbage_does_not_stop_the_stream():
    garbage = os.urandom(4096).replace(b"\r\n\r\n", b"")
    events, decoder = _events(garbage + b"\r\n\r\n", NEWCHANNEL)
    assert [e.uniqueid for e in events] == ["1.1"]


def test_one_megabyte_line_is_dropped_with_bounded_memory():
    parser = FrameParser()
    huge = b"Event: Newchannel\r\nX: " + b"a" * (1024 * 1024)
    list(parser.feed(huge))
    assert len(parser._buf) <= MAX_FRAME_BYTES
    frames = list(parser.feed(b"\r\n\r\n" + NEWCHANNEL))
    assert len(frames) == 1 and parse_frame(frames[0])["Uniqueid"] == "1.1"
    assert parser.stats.oversized_frames == 1


def test_megabyte_in_small_chunks_stays_bounded():
    parser = FrameParser()
    peak = 0
    for _ in range(256):
        list(parser.feed(b"z" * 4096))
        peak = max(peak, len(parser._buf))
    assert peak <= MAX_FRAME_BYTES + 4096
    assert len(list(parser.feed(b"\r\n\r\n" + NEWCHANNEL))) == 1


def test_unknown_and_untracked_events_are_skipped():
    events, decoder = _events(b"Event: FancyNewThing\r\nFoo: bar\r\n\r\n",
                              b"Event: VarSet\r\nUniqueid: 1.1\r\n\r\n", NEWCHANNEL)
    assert len(events) == 1 and decoder.skipped == 2


def test_event_without_uniqueid_or_linkedid():
    assert from_ami(parse_frame(b"Event: Hangup\r\nCause: 16"), 0.0) is None
    event = from_ami(parse_frame(NEWCHANNEL.replace(b"Linkedid: 1.1\r\n", b"")), 0.0)
    assert event is not None and event.linkedid == ""


def test_latin1_caller_names_are_not_lost():
    assert decode_text("Ünïcødé".encode("latin-1")) == "Ünïcødé"
    assert decode_text("张三".encode()) == "张三"


def test_timestamp_header_or_clock():
    with_ts = from_ami(parse_frame(NEWCHANNEL[:-4]), 5.0)
    without = from_ami(parse_frame(NEWCHANNEL.replace(b"Timestamp: 1795706734.859002\r\n", b"")), 5.0)
    bad = from_ami(parse_frame(NEWCHANNEL.replace(b"1795706734.859002", b"yesterday")), 5.0)
    assert (with_ts.ts, without.ts, bad.ts) == (1795706734.859, 5.0, 5.0)


def test_a_banner_too_long_is_dropped_to_the_end_of_its_line_only() -> None:
    """The frame after an over-long banner line is kept, whatever the reads' split."""
    from botmeter.pbx.ami_frames import MAX_BANNER_BYTES

    data = (b"Asterisk Call Manager/9.0.0" + b"B" * (MAX_BANNER_BYTES + 900) + b"\r\n"
            b"Event: Newchannel\r\nUniqueid: 1.1\r\n\r\n")
    for size in (len(data), 1000, 7):
        parser = FrameParser()
        frames = [f for i in range(0, len(data), size) for f in parser.feed(data[i:i + size])]
        assert frames == [b"Event: Newchannel\r\nUniqueid: 1.1"], size
        assert parser.banner == "" and parser.stats.oversized_frames == 1
        assert parser.stats.discarded_bytes == data.index(b"Event"), size


def test_a_stray_blank_line_before_a_frame_is_not_part_of_it() -> None:
    parser = FrameParser()
    frames = list(parser.feed(b"Asterisk Call Manager/9.0.0\r\n\r\nEvent: Hangup\r\n"
                              b"Uniqueid: 1.1\r\n\r\n\r\nEvent: Hangup\r\nUniqueid: 1.2\r\n\r\n"))
    assert frames == [b"Event: Hangup\r\nUniqueid: 1.1", b"Event: Hangup\r\nUniqueid: 1.2"]
