"""The AMI secret: a private, non-empty, UTF-8 file (or value), never repeated in an error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from botmeter.cli import main
from botmeter.config import ConfigError, load_config

SECRET = 'secret = "botmeter-sim"'


def with_secret_file(write_config, tmp_path: Path, content: bytes, mode: int = 0o600,
                     ) -> tuple[Path, Path]:
    """A config whose secret_file holds `content` with `mode`: (config, secret file)."""
    secret = tmp_path / "ami.secret"
    secret.write_bytes(content)
    secret.chmod(mode)
    config = write_config()
    config.write_text(config.read_text().replace(SECRET, 'secret_file = "ami.secret"'))
    return config, secret


def refused_run(config: Path) -> str:
    """`botmeter run` stops with exit 2 and one line, which it returns."""
    result = CliRunner().invoke(main, ["--config", str(config), "run"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("botmeter: configuration error: "), lines
    return lines[0]


def test_a_private_secret_file_is_read(write_config, tmp_path: Path) -> None:
    config, _ = with_secret_file(write_config, tmp_path, b"  s3cret\n", 0o600)
    loaded = load_config(config)
    assert loaded.ami.read_secret(loaded.base_dir) == "s3cret"
    config, _ = with_secret_file(write_config, tmp_path, b"s3cret", 0o400)
    assert load_config(config).ami.read_secret(tmp_path) == "s3cret"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_secret_file_open_to_others_is_refused_with_the_chmod_to_run(
        write_config, tmp_path: Path, mode: int) -> None:
    config, secret = with_secret_file(write_config, tmp_path, b"s3cret\n", mode)
    line = refused_run(config)
    assert str(secret) in line and f"mode {mode:04o}" in line
    assert line.endswith(f"run chmod 600 {secret}")
    assert "s3cret" not in line


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "secret file is empty"),
    (b" \n\t\n", "secret file is empty"),
    ("s\xe9cret".encode("latin-1"), "secret file is not UTF-8 text"),
    (b"\xff\xfe\x00s", "secret file is not UTF-8 text"),
])
def test_an_empty_or_undecodable_secret_file_is_one_line(write_config, tmp_path: Path,
                                                         content: bytes, reason: str) -> None:
    config, secret = with_secret_file(write_config, tmp_path, content)
    line = refused_run(config)
    assert str(secret) in line and reason in line


def test_a_missing_or_unusable_secret_file_is_one_line(write_config, tmp_path: Path) -> None:
    config, secret = with_secret_file(write_config, tmp_path, b"x")
    secret.unlink()
    line = refused_run(config)
    assert str(secret) in line and "No such file or directory" in line
    secret.mkdir()
    line = refused_run(config)
    assert str(secret) in line and "not a regular file" in line


def test_systemd_credentials_are_found_by_name(write_config, tmp_path: Path, monkeypatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "ami.secret").write_text("from-systemd")
    (credentials / "ami.secret").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config, secret = with_secret_file(write_config, tmp_path, b"x")
    secret.unlink()
    loaded = load_config(config)
    assert loaded.ami.read_secret(loaded.base_dir) == "from-systemd"


def test_systemd_credentials_win_over_a_file_this_user_cannot_read(write_config, tmp_path: Path,
                                                                    monkeypatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "ami.secret").write_text("from-systemd")
    (credentials / "ami.secret").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config, secret = with_secret_file(write_config, tmp_path, b"root's copy")
    real_access = os.access
    monkeypatch.setattr("botmeter.config.os.access",
                        lambda path, mode: Path(path) != secret and real_access(path, mode))
    loaded = load_config(config)
    assert loaded.ami.read_secret(loaded.base_dir) == "from-systemd"


@pytest.mark.parametrize("value", ['""', '"   "'])
def test_an_empty_secret_value_is_refused(write_config, value: str) -> None:
    config = write_config()
    config.write_text(config.read_text().replace(SECRET, f"secret = {value}"))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert (info.value.key, info.value.reason) == ("ami.secret", "is empty")


@pytest.mark.parametrize(("old", "new", "key"), [
    ('secret = "8675309"', "secret = 8675309", "ami.secret"),
    ('secret = "8675309"', "secret = 8675309.5", "ami.secret"),
    ('secret = "8675309"', "secret = [8675309]", "ami.secret"),
    ('secret = "8675309"', "secret_file = 8675309", "ami.secret_file"),
    # a whole section of the wrong type holds the secret: only its type is named
    ("[ami]", "[[ami]]", "ami"),
])
def test_a_secret_is_never_repeated_in_a_config_error(write_config, old: str, new: str,
                                                      key: str) -> None:
    config = write_config(secret="8675309")
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.key == key and "8675309" not in str(info.value)
    result = CliRunner().invoke(main, ["--config", str(config), "calls"])
    assert result.exit_code == 2 and key in result.output and "8675309" not in result.output


def test_other_values_are_still_shown(write_config) -> None:
    config = write_config()
    config.write_text(config.read_text().replace("port = 5038", 'port = "5038"'))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.reason.endswith("(got str '5038')")


@pytest.mark.parametrize(("old", "new", "key"), [
    ('username = "botmeter"', 'username = "bm\\r\\nAction: Originate\\r\\nChannel: PJSIP/evil"',
     "ami.username"),
    ('secret = "botmeter-sim"', 'secret = "a\\nb"', "ami.secret"),
    ('host = "127.0.0.1"', 'host = "127.0.0.1\\u0000x"', "ami.host"),
])
def test_values_sent_on_the_ami_connection_are_one_header_line(write_config, old: str, new: str,
                                                               key: str) -> None:
    """A line break in a config value would inject AMI headers or a whole action."""
    config = write_config()
    config.write_text(config.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.key == key and "line break or NUL" in info.value.reason
    assert "Originate" not in str(info.value)


def test_a_secret_file_of_two_lines_is_refused(write_config, tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("first\nAction: Originate\n")
    secret.chmod(0o600)
    config = write_config()
    config.write_text(config.read_text().replace('secret = "botmeter-sim"',
                                                 f'secret_file = "{secret}"'))
    with pytest.raises(ConfigError) as info:
        load_config(config).ami.read_secret(config.parent)
    assert "more than one line" in info.value.reason and "Originate" not in str(info.value)
