"""The event loop the agent runs on: uvloop where installed (its sockets cost a third of
asyncio's, which the FastAGI server's latency needs), else asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # e.g. a platform without wheels: asyncio's loop works the same
        return asyncio.run(main)
    return uvloop.run(main)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; return the soft limit in
    force (systemd's default soft limit, 1024, is below what the FastAGI server may need)."""
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to raise, nothing known
        return 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    target = 1 << 20 if hard == unlimited else hard  # Linux refuses an unlimited soft limit
    if soft != unlimited and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return 1 << 20 if soft == unlimited else soft


def loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def bound_port(server: asyncio.AbstractServer | None, configured: int) -> int:
    """The port a listening server is bound to (`configured` until it listens)."""
    sockets = getattr(server, "sockets", None)
    if not sockets:
        return configured
    return int(sockets[0].getsockname()[1])
