"""The `recovery` check: which mode the site is in (CEL, CDR or AMI only), and whether
botmeter can read the file the mode needs."""

from __future__ import annotations

import time

from ..config import Config, recovery_sources
from .findings import Finding, fail, ok, warn

CHECK = "recovery"
ENABLE = ("set [recovery] cel_db to Asterisk's CEL file (cel_sqlite3_custom's master.db): "
          "README, Pointing it at a real Asterisk")


def check_recovery(config: Config, now: float | None = None) -> Finding:
    """CEL mode when `cel_db` is readable; CDR mode (WARN) with only a CDR file; AMI only
    (WARN) with neither; FAIL when the configured file cannot be read."""
    from ..recovery.cdr import open_cdr
    from ..recovery.cel_source import open_cel
    from ..recovery.tables import SourceError

    sources = recovery_sources(config)
    now = time.time() if now is None else now
    if sources.cel is not None:
        try:
            cel = open_cel(sources.cel)
            try:
                latest = cel.latest_time()
            finally:
                cel.close()
        except SourceError as exc:
            return fail(CHECK, f"CEL mode, but {exc}", _read_fix(sources.cel.name))
        age = "no rows yet" if latest is None else f"newest row {_age(now - latest)} ago"
        return ok(CHECK, f"CEL mode: {sources.cel} ({age}); calls in a gap are rebuilt from it")
    if sources.cdr is not None:
        try:
            open_cdr(sources.cdr).close()
        except SourceError as exc:
            return fail(CHECK, f"CDR mode, but {exc}", _read_fix(sources.cdr.name))
        return warn(CHECK, f"CDR mode: {sources.cdr}; calls wholly in a gap come from CDRs (to "
                           "the second), calls in progress across one are joined late", ENABLE)
    return warn(CHECK, "AMI only: calls that run while botmeter is down or detached are lost, "
                       "and those in progress across a gap are joined late", ENABLE)


def _read_fix(name: str) -> str:
    return (f"check the path, and that botmeter's user may read {name} (the asterisk group, "
            "README, Pointing it at a real Asterisk)")


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
