"""Values that make no sense for reconnects, pings, sweeps and limits are refused at start, with
the one-line configuration error naming file, key and reason."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from botmeter.cli import main
from botmeter.config import ConfigError, load_config
from botmeter.tracking.tracker import MAX_IN_PROGRESS

CALLS = '[calls]\ninbound_contexts = ["from-pstn"]'


@pytest.mark.parametrize(("old", "new", "key", "reason"), [
    ("reconnect_max = 0.5", "reconnect_max = 0.001", "ami.reconnect_max", "greater than or equal to 0.05"),
    ("reconnect_max = 0.5", "reconnect_max = 0.04", "ami.reconnect_max", "greater than or equal to 0.05"),
    ("reconnect_min = 0.05", "reconnect_min = 0.01", "ami.reconnect_min", "greater than or equal to 0.05"),
    ("reconnect_min = 0.05", "reconnect_min = 2.0", "ami.reconnect_max",
     "must be at least reconnect_min (2.0)"),
    ("ping_interval = 10.0", "ping_interval = 0.0001", "ami.ping_interval", "greater than or equal to 1"),
    ("ping_timeout = 5.0", "ping_timeout = 0", "ami.ping_timeout", "greater than or equal to 0.5"),
    ("ping_timeout = 5.0", "ping_timeout = 86400", "ami.ping_timeout", "less than or equal to 600"),
    (CALLS, CALLS + "\nidle_timeout_seconds = 0.0001", "calls.idle_timeout_seconds",
     "greater than or equal to 60"),
    (CALLS, CALLS + "\nmax_in_progress = 0", "calls.max_in_progress", "greater than or equal to 1"),
    (CALLS, CALLS + "\nmax_in_progress = 1.5", "calls.max_in_progress", "valid integer"),
])
def test_senseless_limits_are_refused_naming_file_key_and_reason(write_config, old, new, key,
                                                                 reason):
    path = write_config()
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.path, info.value.key) == (str(path), key)
    assert reason in info.value.reason
    result = CliRunner().invoke(main, ["--config", str(path), "calls"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("botmeter: configuration error: ") and str(path) in line and key in line


def test_sensible_limits_load(write_config):
    path = write_config()
    path.write_text(path.read_text().replace(
        CALLS, CALLS + "\nidle_timeout_seconds = 60\nmax_in_progress = 1"))
    config = load_config(path)
    assert (config.calls.idle_timeout_seconds, config.calls.max_in_progress) == (60, 1)
    assert (config.ami.reconnect_min, config.ami.reconnect_max) == (0.05, 0.5)
    assert load_config(write_config()).calls.max_in_progress == MAX_IN_PROGRESS
