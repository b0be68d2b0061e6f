"""Log lines: JSON or console, journald's priority prefix, stdlib logging rendered alike,
tracebacks as dicts, secrets masked wherever they would appear, the level and format from
the config with the CLI's options winning, and the call's id on lines about a call."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from botmeter import logs
from botmeter.cli import main
from botmeter.config import load_config, read_secret_file
from botmeter.logs import MASK, redacted, setup_logging

from .test_bad_signals import LAB_LINKEDID, _lab_with_bad_user_events

SECRET = "s3cr3t-Ami-Pa55"


@pytest.fixture(autouse=True)
def _own_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sets logging up as it needs; the secrets it registers stay its own."""
    monkeypatch.setattr(logs, "_SECRETS", set())
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:], root.level = handlers, level


def _stderr(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """stderr into a string (in the test itself: pytest sets its own stderr after fixtures)."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    return out


def _log_some() -> None:
    log = structlog.get_logger("botmeter.test")
    log.debug("d")
    log.info("i", n=1)
    log.warning("w")
    log.error("e")
    log.critical("c")
    logging.getLogger("panoramisk").warning("stdlib %s", "w")


def test_json_lines_parse_with_level_logger_and_utc_time(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _stderr(monkeypatch)
    setup_logging("debug", json=True)
    _log_some()
    events = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert [(e["event"], e["level"], e["logger"]) for e in events] == [
        ("d", "debug", "botmeter.test"), ("i", "info", "botmeter.test"),
        ("w", "warning", "botmeter.test"), ("e", "error", "botmeter.test"),
        ("c", "critical", "botmeter.test"), ("stdlib w", "warning", "panoramisk")]
    assert events[1]["n"] == 1 and all(e["timestamp"].endswith("Z") for e in events)


def test_a_stdlib_line_is_rendered_like_a_structlog_line(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _stderr(monkeypatch)
    setup_logging("info", json=True)
    structlog.get_logger("asyncio").warning("same")
    logging.getLogger("asyncio").warning("same")
    logging.getLogger("asyncio").info("below warning: stdlib's chatter stays out")
    mine, theirs = (json.loads(line) for line in stderr.getvalue().splitlines())
    assert mine | {"timestamp": ""} == theirs | {"timestamp": ""}

    setup_logging("info", json=False)
    stderr.truncate(0)
    stderr.seek(0)
    structlog.get_logger("asyncio").warning("same")
    logging.getLogger("asyncio").warning("same")
    mine_text, theirs_text = stderr.getvalue().splitlines()
    assert mine_text.split(" ", 1)[1] == theirs_text.split(" ", 1)[1]  # all but the time
    assert "[warning  ]" in mine_text and "[asyncio]" in mine_text


def _journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """stderr to a file that $JOURNAL_STREAM names, as systemd connects it to the journal."""
    path = tmp_path / "journal"
    stream = path.open("w", encoding="utf-8")
    info = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    monkeypatch.setattr(sys, "stderr", stream)
    return path


def test_under_journald_lines_are_json_with_their_syslog_priority(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _journal(tmp_path, monkeypatch)
    setup_logging("debug")  # "auto": JSON, for the journal
    _log_some()
    sys.stderr.flush()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [(line[:3], json.loads(line[3:])["event"]) for line in lines] == [
        ("<7>", "d"), ("<6>", "i"), ("<4>", "w"), ("<3>", "e"), ("<2>", "c"),
        ("<4>", "stdlib w")]


def test_console_lines_under_journald_keep_the_prefix_and_drop_colours(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _journal(tmp_path, monkeypatch)
    setup_logging("info", json=False)
    structlog.get_logger("botmeter.test").warning("careful", n=2)
    sys.stderr.flush()
    [line] = path.read_text(encoding="utf-8").splitlines()
    assert line.startswith("<4>") and "careful" in line and "\x1b[" not in line


def test_a_journal_stream_that_is_not_stderr_is_not_the_journal(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stderr = _stderr(monkeypatch)
    other = os.stat(tmp_path)  # e.g. inherited by a child whose stderr is a pipe
    monkeypatch.setenv("JOURNAL_STREAM", f"{other.st_dev}:{other.st_ino}")
    setup_logging("info")
    structlog.get_logger("botmeter.test").info("plain")
    [line] = stderr.getvalue().splitlines()
    assert not line.startswith("<") and not line.startswith("{") and "plain" in line


def _fail() -> None:
    raise ValueError("bad value")


def test_a_traceback_is_kept_as_a_dict_in_json(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _stderr(monkeypatch)
    setup_logging("info", json=True)
    try:
        _fail()
    except ValueError:
        structlog.get_logger("botmeter.test").exception("failed")
        logging.getLogger("panoramisk").exception("failed too")
    for line in stderr.getvalue().splitlines():
        event = json.loads(line)
        [trace] = event["exception"]
        assert (trace["exc_type"], trace["exc_value"]) == ("ValueError", "bad value")
        assert trace["frames"][-1]["name"] == "_fail" and event["level"] == "error"
        assert "locals" not in trace["frames"][-1]  # a frame's variables could hold secrets


def test_a_secret_never_appears_in_any_field_or_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _stderr(monkeypatch)
    secret_file = tmp_path / "ami.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    assert read_secret_file(secret_file) == SECRET  # reading it registers it
    for json_lines in (True, False):
        setup_logging("debug", json=json_lines)
        log = structlog.get_logger("botmeter.test")
        log.info(f"login with {SECRET}", secret=SECRET, nested={"a": [f"x{SECRET}y", 3]},
                 path=tmp_path / SECRET)
        try:
            raise ConnectionError(f"refused {SECRET}")
        except ConnectionError:
            log.exception("failed")
        logging.getLogger("panoramisk").warning("sent Secret: %s", SECRET)
    text = stderr.getvalue()
    assert SECRET not in text and text.count(MASK) >= 12, text


def test_registered_secrets_from_the_config_and_short_ones_only_as_whole_values(
        write_config) -> None:
    config = load_config(write_config(secret="abc"))
    config.ami.read_secret(config.base_dir)
    secrets = logs._SECRETS
    assert secrets == {"abc"}
    assert redacted({"secret": "abc", "word": "abcdef"}, secrets) == {
        "secret": MASK, "word": "abcdef"}  # too short to hunt for inside other text
    assert redacted(("x", 1, None, 2.5, True), {"long-secret"}) == ("x", 1, None, 2.5, True)


# -- from the command line -------------------------------------------------------------------

def _replay(config: Path, capture: Path, *options: str) -> list[str]:
    result = CliRunner().invoke(main, ["--config", str(config), *options, "replay", str(capture)])
    assert result.exit_code == 0, result.output
    return result.stderr.splitlines()


def test_level_and_format_come_from_the_config_and_the_options_win(
        write_config, tmp_path: Path) -> None:
    capture = tmp_path / "bad.ami"
    capture.write_bytes(_lab_with_bad_user_events([("Quantity", "1e3")]))
    config = write_config()
    text = config.read_text(encoding="utf-8")
    config.write_text(text + '\n[log]\nlevel = "warning"\njson = true\n', encoding="utf-8")
    events = [json.loads(line) for line in _replay(config, capture)]
    malformed = [e for e in events if e["event"] == "malformed bot signal ignored"]
    # a line about a call names it; a signal for a call never seen has only its linkedid
    assert [(e.get("call_id"), e["linkedid"]) for e in malformed] == [
        (LAB_LINKEDID, LAB_LINKEDID), (None, "4242.1")]

    console = _replay(config, capture, "--no-log-json")
    assert console and not any(line.startswith("{") for line in console)

    config.write_text(text + '\n[log]\nlevel = "error"\njson = true\n', encoding="utf-8")
    assert _replay(config, capture) == []
    assert len(_replay(config, capture, "--log-level", "warning")) == len(events)
