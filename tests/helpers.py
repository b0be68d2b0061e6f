"""Waiting in tests: poll a condition until it holds or a timeout passes (never sleep-then-assert)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(predicate: Callable[[], object], timeout: float = 5.0,
                     interval: float = 0.01) -> None:
    """Wait until `predicate()` is true; AssertionError if it is not within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached in {timeout} s: {_name(predicate)}")
        await asyncio.sleep(interval)


def eventually_sync(predicate: Callable[[], object], timeout: float = 5.0,
                    interval: float = 0.01) -> None:
    """`eventually` for code outside an event loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout} s: {_name(predicate)}")
        time.sleep(interval)


def _name(predicate: Callable[[], object]) -> str:
    code = getattr(predicate, "__code__", None)
    where = f" ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})" if code else ""
    return f"{getattr(predicate, '__qualname__', repr(predicate))}{where}"
