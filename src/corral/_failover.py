"""Several coordinator URLs, and moving to the next when one cannot be reached.

`--server URL1,URL2` (or `CORRAL_URL`, or a join string's url) names several coordinators of
one farm, sharing one database. The client and the worker each send through a
FailoverTransport over the list: a request goes to the current URL; one that could not even
connect there goes to the next at once (it never arrived anywhere, so sending it again
cannot do it twice); any other transport error (a connection reset mid-answer, a read
timeout) is raised as before, for the caller's own retry, and its URL stops being current,
so that retry goes elsewhere. Leases live in the database, so whichever coordinator answers
accepts a worker's heartbeats and results.

A cut link (no reset, packets just dropped) shows only as a timeout, so the worker gives its
heartbeats a read timeout just past what the coordinator may hold them. When one request has
found the current coordinator unreachable and moved on, the async transport abandons every
other request still waiting on that coordinator (a held long-poll for work, a results post),
raising a ReadError for each (it may have arrived: the caller decides, as for a reset), so
they are asked again of the next coordinator at once instead of hanging until their own, much
longer, timeouts.

Rejected: retrying every failed request on the next URL. A submit whose answer was lost may
have been recorded; the caller, which knows whether its request may be repeated, decides.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

__all__ = ["AsyncFailover", "Endpoints", "SyncFailover", "primary_url", "split_urls"]

# the request never reached a coordinator: safe to send to the next one
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout)


def split_urls(text: str) -> list[str]:
    """The URLs of a comma-separated list, without trailing slashes."""
    return [u.strip().rstrip("/") for u in text.split(",") if u.strip()]


def primary_url(text: str) -> str:
    """The first URL of a list (what TLS, loopback and discovery decisions look at)."""
    urls = split_urls(text)
    return urls[0] if urls else text


class Endpoints:
    """A list of URLs and which one is current; pure, no I/O."""

    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("no coordinator URL")
        self.urls = urls
        self._current = 0
        self.moves = 0  # how often `current` changed

    @property
    def current(self) -> str:
        """The URL requests go to now."""
        return self.urls[self._current]

    def failed(self, url: str) -> None:
        """`url` failed: the next one becomes current (unless another failure moved on)."""
        if url == self.current:
            self._current = (self._current + 1) % len(self.urls)
            self.moves += 1

    def retry_after(self, url: str, exc: Exception, tries_left: int) -> bool:
        """A request to `url` raised `exc`: move on; whether to send it again (to the next)."""
        self.failed(url)
        return isinstance(exc, _UNSENT) and tries_left > 0


def _aim(request: httpx.Request, base: str) -> None:
    target = httpx.URL(base)
    request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
    request.headers["host"] = target.netloc.decode()


class AsyncFailover(httpx.AsyncBaseTransport):
    """An async transport over `inner` that moves down the URL list on connection failure."""

    def __init__(self, urls: list[str], inner: httpx.AsyncBaseTransport) -> None:
        self.endpoints = Endpoints(urls)
        self._inner = inner
        self._moved = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for tries_left in reversed(range(len(self.endpoints.urls))):
            base = self.endpoints.current
            _aim(request, base)
            try:
                return await self._send(request, base)
            except httpx.TransportError as exc:
                moves = self.endpoints.moves
                again = self.endpoints.retry_after(base, exc, tries_left)
                if self.endpoints.moves != moves:
                    self._moved.set()  # wake whoever waits in moved(), then a fresh event
                    self._moved = asyncio.Event()
                if not again:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, request: httpx.Request, base: str) -> httpx.Response:
        """Send to `base`; abandon it (ReadError) if another request moves away from it."""
        send = asyncio.ensure_future(self._inner.handle_async_request(request))
        try:
            while True:
                moved = asyncio.ensure_future(self._moved.wait())
                await asyncio.wait({send, moved}, return_when=asyncio.FIRST_COMPLETED)
                moved.cancel()
                if send.done():
                    return send.result()
                if self.endpoints.current != base:
                    raise httpx.ReadError(f"abandoned: {base} stopped answering", request=request)
        finally:
            if not send.done():
                send.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await send

    async def aclose(self) -> None:
        await self._inner.aclose()


class SyncFailover(httpx.BaseTransport):
    """The same over a blocking transport."""

    def __init__(self, urls: list[str], inner: httpx.BaseTransport) -> None:
        self.endpoints = Endpoints(urls)
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for tries_left in reversed(range(len(self.endpoints.urls))):
            base = self.endpoints.current
            _aim(request, base)
            try:
                return self._inner.handle_request(request)
            except httpx.TransportError as exc:
                if not self.endpoints.retry_after(base, exc, tries_left):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._inner.close()
