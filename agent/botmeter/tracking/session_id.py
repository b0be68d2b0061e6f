"""The bot platform's session id (the `start` signal's `Session`): what botmeter accepts.

One rule, used by every way a session id comes in (the three signal styles, an ARI bot's user
event, CEL recovery) and by `botmeter calls --session`: 1 to `MAX_SESSION` characters, each
printable in Python's sense (letters, digits, punctuation and symbols of any script, and the
ASCII space; no control, format or other space characters). It is kept exactly as given:
case, inner spaces and non-ASCII characters included.
"""

from __future__ import annotations

MAX_SESSION = 128


class BadSession(ValueError):
    """A session id that breaks the rule: the message says how."""


def check_session(value: str) -> str:
    """`value` when it is a session id botmeter keeps, else BadSession saying why."""
    if not value:
        raise BadSession("Session is empty")
    if len(value) > MAX_SESSION:
        raise BadSession(f"Session {value[:40]!r}... is longer than {MAX_SESSION} characters")
    bad = next((ch for ch in value if not ch.isprintable()), None)
    if bad is not None:
        kind = "a control" if bad < " " or "\x7f" <= bad <= "\x9f" else "a non-printable"
        raise BadSession(f"Session {value[:80]!r} has {kind} character (U+{ord(bad):04X})")
    return value
