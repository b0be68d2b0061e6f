"""`botmeter sim`: the simulated PBX served on its own, as an admin trying botmeter runs it."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from tests.helpers import eventually_sync


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def botmeter(*args: str) -> list[str]:
    return [sys.executable, "-m", "botmeter.cli", *args]


def test_sim_serves_ami_until_sigterm(tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    port = free_port()
    proc = subprocess.Popen(botmeter("sim", "--listen", f"127.0.0.1:{port}", "--secret-file",
                                     str(secret), "--calls", "0"),
                            stderr=subprocess.PIPE, text=True)
    try:
        answers: list[str] = []

        def logged_in() -> bool:
            try:
                answers.append(login(port))
            except OSError:
                return False
            return True
        eventually_sync(logged_in, timeout=20, interval=0.1)
        answer = answers[-1]
        assert answer.startswith("Asterisk Call Manager/")
        assert "Response: Success" in answer
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"AMI on 127.0.0.1:{port}" in err


def login(port: int) -> str:
    """The banner and the answer to a Login, over a fresh connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"Action: Login\r\nUsername: botmeter\r\nSecret: s3cret\r\n\r\n")
        data = b""
        while data.count(b"\r\n\r\n") < 1 or b"Response:" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.decode()


def test_sim_refuses_bad_arguments_in_one_line(tmp_path: Path) -> None:
    secret = tmp_path / "empty.secret"
    secret.write_text("\n", encoding="utf-8")
    for args, words in ((("--listen", "nowhere", "--secret-file", str(secret)), "bad --listen"),
                        (("--secret-file", str(secret)), "empty --secret-file")):
        done = subprocess.run(botmeter("sim", *args), capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert words in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_sim_plays_rounds_at_a_rate_and_writes_cel_cdr_and_truth(tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    files = {name: tmp_path / name for name in ("cel.db", "cdr.db", "Master.csv", "t.jsonl")}
    done = subprocess.run(botmeter(
        "sim", "--listen", f"127.0.0.1:{free_port()}", "--secret-file", str(secret),
        "--calls", "6", "--rate", "2", "--rounds", "1", "--speed", "50",
        "--cel-db", str(files["cel.db"]), "--cdr-db", str(files["cdr.db"]),
        "--cdr-csv", str(files["Master.csv"]), "--truth", str(files["t.jsonl"]),
        "--commit", "step"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 calls/s" in done.stderr
    truth = [json.loads(line) for line in files["t.jsonl"].read_text().splitlines()]
    assert len(truth) == 6
    # one call every half (virtual) second: mixed_calls' own spacing is 0.5 to 3 s
    offered = sorted(datetime.fromisoformat(t["offered_at"].replace("Z", "+00:00"))
                     for t in truth)
    gaps = [round((b - a).total_seconds(), 1) for a, b in zip(offered, offered[1:], strict=False)]
    assert gaps == [0.5] * 5
    with sqlite3.connect(files["cel.db"]) as cel:
        ended = {row[0] for row in cel.execute(
            "SELECT linkedid FROM cel WHERE eventtype = 'LINKEDID_END'")}
    with sqlite3.connect(files["cdr.db"]) as cdr:
        cdrs = cdr.execute("SELECT count(*), count(DISTINCT linkedid) FROM cdr").fetchone()
    assert {t["call_id"] for t in truth} <= ended
    assert cdrs[1] >= 6 and len(files["Master.csv"].read_text().splitlines()) == cdrs[0]


def test_sim_restarts_on_sigusr1(tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    port = free_port()
    proc = subprocess.Popen(botmeter("sim", "--listen", f"127.0.0.1:{port}", "--secret-file",
                                     str(secret), "--calls", "0", "--down", "1"),
                            stderr=subprocess.PIPE, text=True)
    try:
        eventually_sync(lambda: answers(port), timeout=20, interval=0.1)
        proc.send_signal(signal.SIGUSR1)
        eventually_sync(lambda: not answers(port), timeout=10, interval=0.02)  # down...
        eventually_sync(lambda: answers(port), timeout=10, interval=0.05)  # ...and back
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "restarting, down for 1 s" in err
    assert "1 restarts" in err


def answers(port: int) -> bool:
    """Whether the AMI port takes a login now."""
    try:
        return "Response: Success" in login(port)
    except OSError:
        return False


def test_sim_refuses_a_records_file_it_cannot_write(tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    for option in ("--cel-db", "--cdr-db", "--cdr-csv", "--truth"):
        done = subprocess.run(botmeter("sim", "--secret-file", str(secret), option,
                                       str(tmp_path / "no" / "such.db")),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert option in done.stderr and "no folder" in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
