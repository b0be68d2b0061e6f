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


def loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]
