"""AMI escapes caller ids C-style (Asterisk's `ast_escape_c`), CEL and CDRs do not: botmeter
reads the same name the same from all three (the lab-cel capture has `\\?\\?` on AMI and `??`
in CEL for one caller)."""

from __future__ import annotations

import pytest

from botmeter.pbx.events import ChannelCreated, ami_caller_id, from_ami
from botmeter.pbx.stream import decode_capture

from .conftest import FIXTURES


@pytest.mark.parametrize(("header", "name"), [
    (r"O\'Brien", "O'Brien"),
    (r"\"Boss\" \\ \?\?", '"Boss" \\ ??'),
    ("王五", "王五"),
    ("<unknown>", ""),
    (r"line\nbreak", r"line\nbreak"),  # an escaped control character stays as written
    ("back\\", "back\\"),
])
def test_ami_caller_ids_are_unescaped(header: str, name: str) -> None:
    assert ami_caller_id(header) == name
    event = from_ami({"Event": "Newchannel", "Uniqueid": "1.1", "Linkedid": "1.1",
                      "Channel": "SIP/x-1", "CallerIDNum": "100", "CallerIDName": header,
                      "Timestamp": "1795781734.5"}, 0.0)
    assert isinstance(event, ChannelCreated) and event.caller_name == name


def test_the_lab_capture_names_read_as_cel_wrote_them() -> None:
    events = decode_capture([(FIXTURES / "lab-cel.ami").read_bytes()])
    names = {getattr(ev, "caller_name", "") for ev in events}
    assert "??" in names and not any("\\" in name for name in names)
