"""Where live events enter call tracking: passed on, or held while a gap is healed."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from ..pbx.events import PbxEvent

log = structlog.get_logger(__name__)

#: live events held at most while a gap is healed (a few minutes of a busy PBX); beyond,
#: the newest are dropped and counted (healing that long is a bug to report)
MAX_HELD = 500_000


class EventGate:
    """Events from AMI (`ami`) and the bot (`signal`, FastAGI) pass to `handle`, except
    between `hold()` and `release(cutoff)`: then they wait, and those older than `cutoff` (the
    moment Asterisk's own records were read up to) are dropped, as the healing fed them
    already (CEL has the bot's FastAGI calls too). `first_ami_ts`: the time of the first AMI
    event held, on Asterisk's clock."""

    def __init__(self, handle: Callable[[PbxEvent], None], *, max_held: int = MAX_HELD) -> None:
        self._handle = handle
        self._held: list[PbxEvent] | None = None
        self._max_held = max_held
        self.first_ami_ts: float | None = None
        self.dropped = 0

    def ami(self, event: PbxEvent) -> None:
        if self._held is not None and self.first_ami_ts is None:
            self.first_ami_ts = event.ts
        self.signal(event)

    def signal(self, event: PbxEvent) -> None:
        held = self._held
        if held is None:
            self._handle(event)
        elif len(held) < self._max_held:
            held.append(event)
        else:
            self.dropped += 1
            if self.dropped == 1:
                log.error("too many live events held while healing a gap: dropping the newest",
                          held=len(held))

    @property
    def holding(self) -> bool:
        return self._held is not None

    def hold(self) -> None:
        if self._held is None:
            self._held = []
            self.first_ami_ts = None

    def release(self, cutoff: float | None = None) -> int:
        """Pass on what was held (from `cutoff` on, if given) and stop holding; returns how
        many held events were older than the cutoff and dropped."""
        held, self._held = self._held or [], None
        older = 0
        for event in held:
            if cutoff is not None and event.ts < cutoff:
                older += 1
                continue
            self._handle(event)
        return older
