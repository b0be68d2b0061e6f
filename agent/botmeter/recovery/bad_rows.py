"""Rows of Asterisk's files that were skipped: logged (the first few), and counted."""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)

#: skipped rows logged one by one; the rest are counted in `BadRows.count`
LOGGED_ROWS = 20


class BadRows:
    """An `on_bad(where, reason)` callback for the CEL and CDR readers: logs the first
    `limit` rows it is told of, counts them all."""

    def __init__(self, limit: int = LOGGED_ROWS) -> None:
        self.limit = limit
        self.count = 0

    def __call__(self, where: str, reason: str) -> None:
        self.count += 1
        if self.count <= self.limit:
            log.warning("Asterisk record skipped", where=where, reason=reason)
        elif self.count == self.limit + 1:
            log.warning(f"more Asterisk records skipped: only the first {self.limit} are logged")
