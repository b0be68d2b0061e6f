"""Configuration: the example loads; every mistake names file, key and reason, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from botmeter.cli import main
from botmeter.config import ConfigError, load_config

EXAMPLE = Path(__file__).parent.parent / "config" / "botmeter.toml"


def test_example_config_loads():
    config = load_config(EXAMPLE)
    assert config.agent.id == "pbx-sh-01"
    assert config.tracking_rules().is_inbound("from-pstn", "123")
    assert config.ami.secret_file == "/etc/botmeter/ami.secret"


def test_env_var_selects_the_file(write_config, monkeypatch):
    path = write_config(port=6000)
    monkeypatch.setenv("BOTMETER_CONFIG", str(path))
    assert load_config().ami.port == 6000


def test_secret_file_relative_to_the_config(write_config, tmp_path):
    (tmp_path / "ami.secret").write_text("s3cret\n")
    (tmp_path / "ami.secret").chmod(0o600)
    path = write_config()
    path.write_text(path.read_text().replace('secret = "botmeter-sim"', 'secret_file = "ami.secret"'))
    config = load_config(path)
    assert config.ami.read_secret(config.base_dir) == "s3cret"


@pytest.mark.parametrize(("old", "new", "key", "reason"), [
    ("port = 5038", "prot = 5038", "ami.prot", "unknown key"),
    ("port = 5038", 'port = "5038"', "ami.port", "valid integer"),
    ("port = 5038", "port = 70000", "ami.port", "less than or equal to 65535"),
    ('id = "test-agent"', 'id = "bad id!"', "agent.id", "pattern"),
    ('contexts = ["voicebot"]', "contexts = []", "bot", "no call would reach the bot"),
    ('inbound_contexts = ["from-pstn"]', 'inbound_contexts = "from-pstn"', "calls.inbound_contexts",
     "valid list"),
    ('secret = "botmeter-sim"', "", "ami", "exactly one of secret or secret_file"),
    ("[store]", "[stor]", "stor", "unknown key"),
    ('contexts = ["voicebot"]', 'contexts = ["voicebot"]\nrejoin_seconds = -1', "bot.rejoin_seconds",
     "greater than or equal to 0"),
    ('listen = "127.0.0.1:0"', 'listen = "127.0.0.1"', "agi.listen", "is not host:port"),
    ('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\nallow = ["10.0.0.300"]', "agi.allow",
     "not an IP address or network"),
])
def test_bad_config_is_refused_naming_file_key_and_reason(write_config, old, new, key, reason):
    path = write_config()
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    assert info.value.key == key
    assert reason in info.value.reason
    result = CliRunner().invoke(main, ["--config", str(path), "calls"])
    assert result.exit_code == 2
    assert str(path) in result.output and key in result.output


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[agent\nid=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    result = CliRunner().invoke(main, ["--config", str(broken), "run"])
    assert result.exit_code == 2 and "broken.toml" in result.output


def test_cli_argument_errors_are_clear(write_config, tmp_path):
    path = write_config()
    runner = CliRunner()
    bad_time = runner.invoke(main, ["--config", str(path), "calls", "--since", "last tuesday"])
    assert bad_time.exit_code == 2 and "ISO 8601" in bad_time.output
    bad_outcome = runner.invoke(main, ["--config", str(path), "calls", "--outcome", "won"])
    assert bad_outcome.exit_code == 2 and "won" in bad_outcome.output
    no_db = runner.invoke(main, ["--config", str(path), "calls", "--db", str(tmp_path / "x.db")])
    assert no_db.exit_code == 2 and "no database" in no_db.output
    no_file = runner.invoke(main, ["--config", str(path), "replay", str(tmp_path / "none.ami")])
    assert no_file.exit_code == 2


def test_run_refuses_a_fastagi_port_in_use(write_config):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_config()
        path.write_text(path.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'))
        result = CliRunner().invoke(main, ["--config", str(path), "run"])
    assert result.exit_code == 1
    assert f"[agi] listen 127.0.0.1:{port}" in result.output and "in use" in result.output


def test_bot_rejoin_seconds_reaches_the_tracking_rules(write_config):
    path = write_config()
    assert load_config(path).tracking_rules().rejoin_seconds == 1.0
    path.write_text(path.read_text().replace('contexts = ["voicebot"]',
                                             'contexts = ["voicebot"]\nrejoin_seconds = 2.5'))
    assert load_config(path).tracking_rules().rejoin_seconds == 2.5
