"""Shared test helpers: the real lab capture, a config file factory, and the event loops the
live tests run on."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import settings

from botmeter.uplink.receiver import Receiver

from .uplink_support import KEY, T0, TOKEN, Clock

# CI runs the same examples every time (a red CI must be reproducible); developers explore.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

FIXTURES = Path(__file__).parent / "fixtures"
LAB_CAPTURE = FIXTURES / "lab-basic.ami"
LAB_EXPECTED = FIXTURES / "lab-basic.expected.json"

CONFIG_TEMPLATE = """
[agent]
id = "test-agent"

[ami]
host = "127.0.0.1"
port = {port}
username = "botmeter"
secret = "{secret}"
auth = "{auth}"
ping_interval = {ping_interval}
ping_timeout = {ping_timeout}
reconnect_min = 0.05
reconnect_max = 0.5

[calls]
inbound_contexts = ["from-pstn"]

[bot]
contexts = ["voicebot"]

[agi]
listen = "127.0.0.1:0"

[http]
listen = '127.0.0.1:0'  # quoted apart from [agi] listen, which tests rewrite by text

[store]
path = "{db}"
"""


@pytest.fixture
def lab_expected() -> list[dict]:
    return json.loads(LAB_EXPECTED.read_text(encoding="utf-8"))


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a valid config (overridable) and return its path."""

    def _write(port: int = 5038, secret: str = "botmeter-sim", auth: str = "md5",
               ping_interval: float = 10.0, ping_timeout: float = 5.0, extra: str = "") -> Path:
        path = tmp_path / "botmeter.toml"
        path.write_text(CONFIG_TEMPLATE.format(
            port=port, secret=secret, auth=auth, ping_interval=ping_interval,
            ping_timeout=ping_timeout, db=tmp_path / "calls.db") + extra, encoding="utf-8")
        return path

    return _write


# Event loops. The agent runs on uvloop where it is installed (botmeter.runtime), so the tests
# that drive it over sockets run on both loops: a module opts in with
# `pytestmark = pytest.mark.both_loops`, and each of its async tests runs once per loop (test
# ids end in [asyncio] and [uvloop]). Other async tests keep asyncio's loop.

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _loop_factories() -> dict[str, LoopFactory]:
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # e.g. no wheels for this platform: production runs asyncio's loop too
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


#: the loops the `both_loops` tests run on, by name (as `botmeter.runtime.loop_name()` says it)
LOOPS: dict[str, LoopFactory] = _loop_factories()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_loops: run the module's async tests on asyncio's loop and on uvloop")


@pytest.hookimpl(optionalhook=True)  # pytest-asyncio >= 1.5; older ones run asyncio's loop only
def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item,
                                  ) -> Mapping[str, LoopFactory]:
    if item.get_closest_marker("both_loops") is not None:
        return LOOPS
    return {"asyncio": asyncio.new_event_loop}


# -- the uplink's tests (test_uplink.py, test_uplink_hostile.py; others define their own) --------


@pytest.fixture
def clock() -> Clock:
    """The agent's and the vendor's clock, at the start of the first bucket."""
    return Clock(T0)


@pytest.fixture
def receiver(tmp_path: Path, clock: Clock) -> Iterator[Receiver]:
    """The reference receiver on loopback, on `clock`."""
    with Receiver(tmp_path / "vendor.db", TOKEN, KEY.encode(), clock=clock) as r:
        yield r
