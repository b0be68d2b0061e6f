"""AGI helpers shared by the FastAGI session and the AGI script (stdlib only, cheap to import):
reading Asterisk's replies, turning query strings and `key=value` arguments into signal fields,
and quoting what goes back to Asterisk."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from botmeter.tracking.signals import MAX_FIELD, SignalError

#: the fields a signal may carry, under the names the UserEvent path uses
FIELD_NAMES = ("Module", "Quantity", "Unit", "Outcome", "Target", "Reason", "Score", "Scale",
               "Source", "Session")
_CANONICAL = {name.lower(): name for name in FIELD_NAMES}
#: Asterisk reads AGI commands into a 2 KiB buffer
MAX_COMMAND = 2000
#: fields (query parameters + `key=value` arguments) accepted per signal
MAX_FIELDS = 32
#: lines read for one command's reply (HANGUP, 100 Trying, 520 usage text) before giving up
MAX_REPLY_LINES = 100

_RESULT = re.compile(r"result=(-?\d*)(?:\s+\((.*)\))?")


# -- Asterisk's replies ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """One AGI command reply: code (200, 510, 511, 520; 0 if unreadable), result and its data."""

    code: int
    result: str = ""
    data: str | None = None

    @property
    def ok(self) -> bool:
        """Asterisk ran the command: 200, and neither `result=-1` nor `(hangup)`."""
        return self.code == 200 and self.result != "-1" and self.data != "hangup"


def parse_reply(line: str) -> Reply:
    """A single-line reply such as `200 result=1 (1795706738.4)`."""
    code = line[:3]
    if not code.isdigit():
        return Reply(0, "", line[:200])
    match = _RESULT.search(line, 3)
    if match is None:
        return Reply(int(code), "", line[4:204])
    return Reply(int(code), match.group(1), match.group(2))


class ReplyTooLong(Exception):
    """More than `max_lines` lines without a reply."""


class ReplyLines:
    """The reply to one command, line by line: `HANGUP` and `100 Trying` lines are skipped, a
    multi-line `520-` usage block is read through its closing `520 ` line. Asterisk's lines are
    fed in as they come; `reset` before each command."""

    __slots__ = ("max_lines", "lines", "in_usage")

    def __init__(self, max_lines: int = MAX_REPLY_LINES) -> None:
        self.max_lines = max_lines
        self.lines = 0
        self.in_usage = False

    def reset(self) -> None:
        self.lines = 0
        self.in_usage = False

    def feed(self, line: str) -> Reply | None:
        """The reply when `line` completes it, else None; ReplyTooLong past `max_lines` lines."""
        self.lines += 1
        if self.lines > self.max_lines:
            raise ReplyTooLong(f"no reply within {self.max_lines} lines")
        text = line.strip()
        if self.in_usage:
            if text.startswith("520 "):
                self.in_usage = False
                return Reply(520, "", text[4:204])
            return None
        if not text or text == "HANGUP" or text.startswith("100 "):
            return None
        if text.startswith("520-"):
            self.in_usage = True
            return None
        return parse_reply(text)


# -- signal fields ------------------------------------------------------------------------------

_CONTROL = {c: " " for c in range(32)} | {127: " "}


def canonical_fields(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """Known fields under their canonical names (keys matched case-insensitively; a field given
    twice: the first counts, as with an AMI UserEvent's headers), and the unknown keys, which
    are ignored."""
    fields: dict[str, str] = {}
    ignored: list[str] = []
    for key, value in pairs:
        name = _CANONICAL.get(key.strip().lower())
        if name is None:
            if key.strip():
                ignored.append(key.strip()[:40])
            continue
        if name not in fields:
            fields[name] = value.strip()[:MAX_FIELD + 1]  # a longer number is refused, not cut
    return fields, ignored


def split_pair(arg: str) -> tuple[str, str] | None:
    """An argument `key=value` (or `key: value`) as (key, value); None when it is neither."""
    key, sep, value = arg.partition("=")
    if not sep:
        key, sep, value = arg.partition(":")
    return (key, value) if sep else None


@functools.cache
def _unquote() -> Callable[[str], str]:
    """urllib.parse's unquote, imported once on first use (the AGI script has no query string
    and starts faster without urllib.parse)."""
    from urllib.parse import unquote

    return unquote


def query_pairs(query: str) -> list[tuple[str, str]]:
    """`k=v&k=v` percent-decoded (a `+` is a plus sign, as in a URI: write a space as %20, so
    `score=+4` is refused like the UserEvent's `Score: +4`); SignalError beyond MAX_FIELDS."""
    parts = [p for p in query.split("&") if p]
    if len(parts) > MAX_FIELDS:
        raise SignalError(f"more than {MAX_FIELDS} fields")
    unquote = _unquote()
    return [(unquote(k), unquote(v)) for k, _, v in (p.partition("=") for p in parts)]


def signal_fields(query: str = "", args: Iterable[str] = ()) -> tuple[dict[str, str], list[str],
                                                                        list[str]]:
    """A signal's fields from a URL query string (`module=asr&quantity=12`, URL-encoded) and
    arguments `key=value` (or `key: value`); an argument wins over the query for the same field.
    Returns (known fields under their canonical names, ignored unknown keys, arguments that are
    not key=value); SignalError beyond MAX_FIELDS fields. FastAGI and `botmeter-agi` share it."""
    pairs: list[tuple[str, str]] = []  # the arguments first: they win over the query
    not_pairs: list[str] = []
    for arg in args:
        pair = split_pair(arg)
        if pair is None:
            not_pairs.append(arg)
        else:
            pairs.append(pair)
        if len(pairs) > MAX_FIELDS:
            raise SignalError(f"more than {MAX_FIELDS} fields")
    if query:
        pairs += query_pairs(query)
        if len(pairs) > MAX_FIELDS:
            raise SignalError(f"more than {MAX_FIELDS} fields")
    fields, ignored = canonical_fields(pairs)
    return fields, ignored, not_pairs


# -- what goes back to Asterisk -----------------------------------------------------------------


def clean(text: str) -> str:
    """Control characters (newlines included) replaced by spaces: one AGI line stays one line."""
    return text.translate(_CONTROL)


def agi_quote(text: str) -> str:
    """One AGI command argument: double-quoted, with backslash and quote escaped
    (Asterisk's parse_args takes `\\x` as a literal x)."""
    escaped = clean(text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def app_escape(text: str) -> str:
    """A value inside dialplan application arguments: `\\ , ( ) [ ] "` backslash-escaped so
    that Asterisk's argument splitting (which counts brackets as it counts parentheses) keeps it
    as one argument, unchanged."""
    out = []
    for ch in clean(text):
        if ch in '\\,()[]"':
            out.append("\\")
        out.append(ch)
    return "".join(out)


def user_event_data(signal: str, fields: dict[str, str]) -> str:
    """The UserEvent application's data for a signal: `BotMeter,Signal: usage,Module: asr,...`."""
    parts = ["BotMeter", f"Signal: {app_escape(signal.strip().lower())}"]
    parts += [f"{name}: {app_escape(fields[name])}" for name in FIELD_NAMES if fields.get(name)]
    return ",".join(parts)
