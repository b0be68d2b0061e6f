"""The recovery sources `[recovery]` configures, as the healer reads them."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Config
from .heal import CdrFeed, CelFeed


def recovery_feeds(config: Config) -> tuple[Callable[[], CelFeed] | None,
                                            Callable[[], CdrFeed] | None]:
    """Openers of the CEL and CDR sources (None: not configured)."""
    return None, None
