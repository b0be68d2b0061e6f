"""AGI helpers shared by the FastAGI server and the AGI script (stdlib only, cheap to import)."""

from __future__ import annotations

from collections.abc import Iterable

#: the fields a signal may carry, under the names the UserEvent path uses
FIELD_NAMES = ("Module", "Quantity", "Unit", "Outcome", "Target", "Reason")
_CANONICAL = {name.lower(): name for name in FIELD_NAMES}
#: longest value kept per field (as botmeter.tracking.signals.MAX_FIELD)
MAX_VALUE = 200
#: Asterisk reads AGI commands into a 2 KiB buffer
MAX_COMMAND = 2000

_CONTROL = {c: " " for c in range(32)} | {127: " "}


def canonical_fields(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """Known fields under their canonical names (keys matched case-insensitively, last one wins),
    and the unknown keys, which are ignored."""
    fields: dict[str, str] = {}
    ignored: list[str] = []
    for key, value in pairs:
        name = _CANONICAL.get(key.strip().lower())
        if name is None:
            if key.strip():
                ignored.append(key.strip()[:40])
            continue
        fields[name] = value.strip()[:MAX_VALUE]
    return fields, ignored


def clean(text: str) -> str:
    """Control characters (newlines included) replaced by spaces: one AGI line stays one line."""
    return text.translate(_CONTROL)


def agi_quote(text: str) -> str:
    """One AGI command argument: double-quoted, with backslash and quote escaped
    (Asterisk's parse_args takes `\\x` as a literal x)."""
    escaped = clean(text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def app_escape(text: str) -> str:
    """A value inside dialplan application arguments: `\\ , ( ) "` backslash-escaped so that
    Asterisk's argument splitting keeps it as one argument, unchanged."""
    out = []
    for ch in clean(text):
        if ch in '\\,()"':
            out.append("\\")
        out.append(ch)
    return "".join(out)


def user_event_data(signal: str, fields: dict[str, str]) -> str:
    """The UserEvent application's data for a signal: `BotMeter,Signal: usage,Module: asr,...`."""
    parts = ["BotMeter", f"Signal: {app_escape(signal.strip().lower())}"]
    parts += [f"{name}: {app_escape(fields[name])}" for name in FIELD_NAMES if fields.get(name)]
    return ",".join(parts)
