"""Make large AMI captures for benchmarks: the lab capture repeated with renumbered ids."""

from __future__ import annotations

import re
from pathlib import Path

LAB = Path(__file__).parent.parent / "fixtures" / "lab-basic.ami"
_ID_LINE = re.compile(rb"^(\w*(?:unique|linked)id): (\d+)\.(\d+)\r$", re.M | re.I)
_TS_LINE = re.compile(rb"^Timestamp: (\d+)\.(\d+)\r$", re.M)


def lab_events_count(data: bytes) -> int:
    return data.count(b"\r\nEvent: ") + data.startswith(b"Event: ")


def repeated_capture(min_events: int) -> tuple[bytes, int]:
    """The lab capture's events repeated until at least `min_events`; ids and times shifted per copy."""
    raw = LAB.read_bytes()
    banner_end = raw.index(b"\r\n\r\n", raw.index(b"Response:")) + 4
    header, body = raw[:banner_end], raw[banner_end:]
    per_copy = lab_events_count(body)
    copies = -(-min_events // per_copy)
    parts = [header]
    for k in range(copies):
        def renumber(m: re.Match[bytes], k: int = k) -> bytes:
            return m.group(1) + b": " + m.group(2) + b"." + str(int(m.group(3)) + k * 100_000).encode() + b"\r"

        def shift(m: re.Match[bytes], k: int = k) -> bytes:
            return b"Timestamp: " + str(int(m.group(1)) + k * 60).encode() + b"." + m.group(2) + b"\r"

        parts.append(_TS_LINE.sub(shift, _ID_LINE.sub(renumber, body)))
    return b"".join(parts), per_copy * copies
