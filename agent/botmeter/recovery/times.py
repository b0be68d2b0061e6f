"""Times as Asterisk writes them into CEL and CDR files, to UTC epoch seconds."""

from __future__ import annotations

import math
from datetime import datetime, tzinfo

from ..pbx.events import MAX_TIMESTAMP, MIN_TIMESTAMP


class BadTime(ValueError):
    """A time that cannot be read, or one outside 2000..2100."""


def parse_time(text: str, tz: tzinfo | None = None) -> float:
    """Epoch seconds from `1795781734.802754` (CEL's default), or from a date and time as
    cel.conf's `dateformat` or a CDR writes it (`2026-11-27 12:15:34`, optionally with a
    fraction and a UTC offset). A time without an offset is in `tz`, by default this host's
    local zone (Asterisk writes its own local time, and botmeter runs beside it).
    BadTime when it is none of these or falls outside 2000..2100."""
    raw = text.strip()
    if not raw:
        raise BadTime("no time")
    try:
        value = float(raw)
    except ValueError:
        value = _date_time(raw, tz)
    if not MIN_TIMESTAMP <= value < MAX_TIMESTAMP:  # also refuses NaN
        raise BadTime(f"{raw[:40]!r} is not a time in 2000..2100")
    return value


def _date_time(raw: str, tz: tzinfo | None) -> float:
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadTime(f"{raw[:40]!r} is neither epoch seconds nor a date and time "
                      "(YYYY-MM-DD HH:MM:SS)") from None
    if moment.tzinfo is None and tz is not None:
        moment = moment.replace(tzinfo=tz)
    try:
        return moment.timestamp()  # naive: the host's local time
    except (OverflowError, OSError, ValueError):
        return math.nan
