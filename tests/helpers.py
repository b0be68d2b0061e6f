"""Waiting in tests: poll a condition, never sleep-then-assert."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(predicate: Callable[[], object], timeout: float = 5.0,
                     interval: float = 0.01) -> None:
    """Poll `predicate` until it is true; fail naming it if `timeout` seconds pass first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {getattr(predicate, '__name__', predicate)}")
        await asyncio.sleep(interval)
