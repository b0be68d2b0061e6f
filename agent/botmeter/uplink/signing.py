"""What both ends of the uplink compute alike: idempotency keys, the HMAC signature, and the
digest of a summary's calls. Pure functions, shared by the agent and the reference receiver."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

#: a request whose timestamp is further than this from the receiver's clock is refused
MAX_SKEW_SECONDS = 300


class SignatureError(Exception):
    """A request that fails verification: the message says why (never the secret)."""


def idempotency_key(agent_id: str, plan_id: str, bucket_start: str, revision: int) -> str:
    """hex sha256 of `agent_id|plan_id|bucket_start|revision`: one key per summary revision."""
    text = f"{agent_id}|{plan_id}|{bucket_start}|{revision}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def batch_key(keys: Iterable[str]) -> str:
    """The request's Idempotency-Key: the summary's own key when the batch holds one, else the
    hex sha256 of the summaries' keys joined by commas, in the order sent."""
    keys = list(keys)
    if len(keys) == 1:
        return keys[0]
    return hashlib.sha256(",".join(keys).encode("ascii")).hexdigest()


def calls_sha256(call_ids: Iterable[str]) -> str:
    """hex sha256 of the sorted call ids joined by newlines (no trailing newline)."""
    return hashlib.sha256("\n".join(sorted(call_ids)).encode("utf-8")).hexdigest()


def signature(secret: bytes, timestamp: int | str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: bytes, timestamp: str | None, signed: str | None, body: bytes, now: float,
           max_skew: float = MAX_SKEW_SECONDS) -> int:
    """Check a request's X-Botmeter-Timestamp and X-Botmeter-Signature; return the timestamp.
    SignatureError when either is missing or malformed, the timestamp is more than `max_skew`
    seconds from `now`, or the signature does not match the body."""
    if not timestamp or not signed:
        raise SignatureError("missing X-Botmeter-Timestamp or X-Botmeter-Signature")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise SignatureError("X-Botmeter-Timestamp is not unix seconds")
    stamp = int(timestamp)
    if abs(now - stamp) > max_skew:
        raise SignatureError(f"stale timestamp: {abs(now - stamp):.0f} s from the receiver's clock "
                             f"(at most {max_skew:.0f})")
    if not hmac.compare_digest(signature(secret, timestamp, body).encode("ascii"),
                               signed.encode("ascii", "replace")):
        raise SignatureError("signature does not match the body")
    return stamp
