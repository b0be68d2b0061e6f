"""Whether the vendor's billing API is reachable and accepts the token and signature: one
signed request with no summary in it, which a receiver refuses after checking both (the
reference receiver answers 422, "summaries: must be a non-empty array") and stores nothing."""

from __future__ import annotations

import time

from ..uplink.delivery import clean, request_headers
from ..uplink.http import Answered, Poster, PostFailed
from ..uplink.settings import UplinkSettings
from ..uplink.summary import canonical
from .findings import Finding, fail, ok, warn

CHECK = "uplink"
#: answers that come only after the token and the signature were accepted
ACCEPTED = frozenset({400, 409, 413, 415, 422})


def check_uplink(settings: UplinkSettings, now: float | None = None) -> Finding:
    body = canonical({"agent_id": settings.agent_id, "summaries": []})
    headers = request_headers(settings, body, [], time.time() if now is None else now)
    poster = Poster(settings)
    try:
        answer = poster.post(settings.endpoint, body, headers)
    except PostFailed as exc:
        return fail(CHECK, f"{settings.endpoint} unreachable: {clean(str(exc), settings.secrets())}",
                    "check [uplink] url, DNS, the firewall and ca_file")
    finally:
        poster.close()
    return uplink_finding(settings, answer)


def uplink_finding(settings: UplinkSettings, answer: Answered) -> Finding:
    """What the vendor's answer to the empty batch says (pure)."""
    status = answer.status
    said = clean(answer.text, settings.secrets()) or ""
    where = settings.endpoint
    if 200 <= status < 300 or status in ACCEPTED:
        return ok(CHECK, f"{where} reachable; token and signature accepted (HTTP {status} to an "
                         "empty batch; nothing stored)")
    if status in (401, 403):
        return fail(CHECK, f"{where} refused the token or signature: HTTP {status} {said}",
                    "check [uplink] token_file and secret_file with the vendor, and this "
                    "host's clock")
    if status == 404:
        return fail(CHECK, f"{where}: HTTP 404, no such endpoint",
                    "set [uplink] url to the API's base URL (botmeter adds /v1/usage/summaries)")
    if 300 <= status < 400:
        target = answer.headers.get("location", "?")
        return fail(CHECK, f"{where} redirects (HTTP {status}) to {target}",
                    "set [uplink] url to where it redirects")
    return warn(CHECK, f"{where} answered HTTP {status} {said}",
                "the vendor may be down: summaries wait in the outbox (botmeter sync status)")
