"""One POST to the vendor, from synchronous code, with a deadline for the whole exchange and a
bounded answer: an httpx.AsyncClient on a private event loop (httpx's own timeouts bound each
read, so a vendor trickling its answer a byte at a time would hold a sync client forever)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import cast

import httpx

from .settings import UplinkSettings

#: how much of an answer is read (the rest is dropped with the connection)
MAX_ANSWER_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Answered:
    status: int
    headers: httpx.Headers
    text: str


class PostFailed(Exception):
    """No answer: a timeout, a refused or reset connection, a TLS failure."""


class Poster:
    """POSTs to the vendor; one per thread (its event loop is its own)."""

    def __init__(self, settings: UplinkSettings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._client: httpx.AsyncClient | None = None

    def _make_client(self) -> httpx.AsyncClient:
        """TLS verified (the configured CA file and client certificate), no redirects followed,
        no proxy or CA taken from the environment."""
        s = self.settings
        verify = s.tls_context() if s.url.startswith("https:") else True
        return httpx.AsyncClient(verify=verify, timeout=httpx.Timeout(s.timeout),
                                 follow_redirects=False, trust_env=False,
                                 headers={"User-Agent": "botmeter-uplink/1"})

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answered:
        """The vendor's answer (status, headers, the first MAX_ANSWER_BYTES of the body as
        text), or PostFailed saying why there is none."""
        if self._client is None:
            self._client = self._make_client()
        deadline = self.settings.timeout
        try:
            return self._loop.run_until_complete(
                asyncio.wait_for(self._post(self._client, url, body, headers), deadline))
        except TimeoutError:
            raise PostFailed(f"timed out: no complete answer within {deadline:g} s") from None
        except httpx.HTTPError as exc:
            raise PostFailed(f"{type(exc).__name__}: {exc}") from None
        except OSError as exc:
            raise PostFailed(f"{type(exc).__name__}: {exc.strerror or exc}") from None

    @staticmethod
    async def _post(client: httpx.AsyncClient, url: str, body: bytes,
                    headers: dict[str, str]) -> Answered:
        async with client.stream("POST", url, content=body, headers=headers) as response:
            kept = bytearray()
            chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
            try:
                async for chunk in chunks:
                    kept += chunk
                    if len(kept) >= MAX_ANSWER_BYTES:
                        break  # the rest is never read: the connection is dropped, not reused
            finally:
                await chunks.aclose()  # closed here, not left to the garbage collector
            text = bytes(kept[:MAX_ANSWER_BYTES]).decode("utf-8", "replace")
            if response.headers.get("content-encoding", "identity") != "identity":
                text = f"({response.headers['content-encoding']}-encoded answer)"
            return Answered(response.status_code, response.headers, text)

    def close(self) -> None:
        loop = self._loop
        if self._client is not None:
            loop.run_until_complete(self._client.aclose())
            self._client = None
        loop.run_until_complete(_cancel_the_rest())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _cancel_the_rest() -> None:
    """Cancel what an abandoned exchange left behind on this loop, and wait for it."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
