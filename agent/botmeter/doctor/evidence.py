"""Which AMI read classes the manager user has, from the events that arrive (pure).

Asterisk tells no session its own read classes (only `manager show user` on its console
does); it sends an event only to sessions that may read its class (`Privilege: call,all`).
So a class is confirmed by an event of it. A class is known to be missing when an event that
did arrive means one of that class was sent at the same moment and none came: the dialplan
running `UserEvent` sends a `UserEvent` (user), `Queue` a `QueueCallerJoin` (agent), `Answer`,
`Dial` or `Hangup` a call event, and an inbound channel's `Newchannel` its first `Newexten`
(dialplan). Otherwise, after a quiet watch, the class is only not confirmed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: the classes botmeter reads (docs: README, Pointing it at a real Asterisk)
NEEDED = ("call", "agent", "user", "dialplan")
#: dialplan applications and the class of the event each one sends at once
APP_SENDS = {"UserEvent": "user", "Queue": "agent", "Answer": "call", "Dial": "call",
             "Hangup": "call"}
#: seconds allowed between an event and the one it implies
GRACE = 2.0
#: sent straight to one session, never as a classed event (no Timestamp either)
NOT_BROADCAST = frozenset({"FullyBooted"})


@dataclass(frozen=True, slots=True)
class Expected:
    """An event of `cls` should arrive by `due`, because of `because`."""

    cls: str
    due: float
    because: str


@dataclass
class ReadEvidence:
    """Feed spontaneous events (not an action's answers); then `verdicts()`."""

    inbound_contexts: frozenset[str] = frozenset()
    seen: dict[str, str] = field(default_factory=dict)  # class -> first event name of it
    expected: list[Expected] = field(default_factory=list)
    stamped: int = 0  # events with a Timestamp header
    unstamped: int = 0

    def feed(self, headers: Mapping[str, str], now: float) -> None:
        name = headers.get("Event", "")
        if name in NOT_BROADCAST or "ActionID" in headers:
            return
        if "Timestamp" in headers:
            self.stamped += 1
        else:
            self.unstamped += 1
        for cls in privilege_classes(headers.get("Privilege", "")):
            self.seen.setdefault(cls, name)
        channel = headers.get("Channel", "?")
        if name == "Newexten":
            app = headers.get("Application", "")
            implied = APP_SENDS.get(app)
            if implied is not None:
                self._expect(implied, now, f"{channel} ran {app}() in the dialplan")
        elif name == "Newchannel" and headers.get("Context") in self.inbound_contexts:
            self._expect("dialplan", now,
                         f"inbound channel {channel} entered context {headers['Context']}")

    def _expect(self, cls: str, now: float, because: str) -> None:
        if cls not in self.seen and not any(e.cls == cls for e in self.expected):
            self.expected.append(Expected(cls, now + GRACE, because))

    def complete(self) -> bool:
        """Every needed class confirmed."""
        return all(cls in self.seen for cls in NEEDED)

    def waiting_until(self) -> float | None:
        """The last moment an expected, still unseen class may yet arrive by."""
        due = [e.due for e in self.expected if e.cls not in self.seen]
        return max(due) if due else None

    def verdicts(self, now: float) -> dict[str, tuple[str, str]]:
        """Per needed class: ("seen", first event), ("missing", why it should have come) or
        ("unknown", "")."""
        out: dict[str, tuple[str, str]] = {}
        for cls in NEEDED:
            if cls in self.seen:
                out[cls] = ("seen", self.seen[cls])
                continue
            overdue = [e for e in self.expected if e.cls == cls and e.due <= now]
            out[cls] = ("missing", overdue[0].because) if overdue else ("unknown", "")
        return out


def privilege_classes(privilege: str) -> Iterable[str]:
    """The classes of an event's `Privilege` header (`call,all` is class call)."""
    return (p.strip().lower() for p in privilege.split(",") if p.strip() and p.strip() != "all")
