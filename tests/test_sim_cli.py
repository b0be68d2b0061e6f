"""`botmeter sim`: the simulated PBX served on its own, as an admin trying botmeter runs it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
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
