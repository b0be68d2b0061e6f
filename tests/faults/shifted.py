"""`python shifted.py SECONDS ARGS...`: a botmeter command on a host whose clock is SECONDS behind
the real one (`time.time`, which is botmeter's only wall clock).

The uplink's fault run puts its simulated PBX and its agent on one such clock, set so that an
hour ends in the middle of the load: the uplink sends an hour only once it has ended, and this
way it has one to send, and revisions of it, while the receiver flaps."""

from __future__ import annotations

import sys
import time


def main() -> None:
    offset = float(sys.argv[1])
    real = time.time
    time.time = lambda: real() - offset  # before botmeter is imported: every clock it binds
    from botmeter.cli import main as botmeter

    botmeter(sys.argv[2:], prog_name="botmeter")


if __name__ == "__main__":
    main()
