"""systemd's notify protocol, without a dependency: `KEY=value` lines in one datagram to the
AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an abstract name written with a leading
`@`). Outside systemd (no $NOTIFY_SOCKET) every call does nothing.

`watchdog_interval` reads $WATCHDOG_USEC (and $WATCHDOG_PID, when systemd names the process
that must ping): the service pings at half of it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


def notify_address(value: str | None) -> str | bytes | None:
    """The socket address $NOTIFY_SOCKET names: a path, an abstract name (`@name`, sent with a
    leading NUL byte), or None when it is unset, empty or not a unix socket."""
    if not value or not value.startswith(("/", "@")):
        return None  # e.g. vsock:... (systemd 254+, for virtual machines): not this agent's case
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify_message(fields: Mapping[str, str]) -> bytes:
    """`KEY=value` lines; a value is one line (newlines in a status become spaces)."""
    return "\n".join(f"{key}={' '.join(str(value).splitlines())}"
                     for key, value in fields.items()).encode()


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between watchdog pings (half of $WATCHDOG_USEC), or None when systemd asks for
    none, or asks another process ($WATCHDOG_PID)."""
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class Notifier:
    """Sends notify messages to systemd; a failed send is logged once and never raises (the
    agent's work matters more than its supervisor hearing about it)."""

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(notify_address(env.get("NOTIFY_SOCKET")))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; whether it was sent."""
        if self.address is None or not fields:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto(notify_message(fields), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("systemd notify failed", socket=_printable(self.address),
                            error=exc.strerror or str(exc))
            return False
        self._failed = False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _printable(address: str | bytes) -> str:
    return "@" + address[1:].decode(errors="replace") if isinstance(address, bytes) else address
