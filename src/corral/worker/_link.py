"""The worker's requests to its coordinator besides the lease and heartbeat loops: blobs in
and out, the allowlist, tasks given back and results sent on their own. Every JSON call of the
worker goes through `Link.post`: over the WebSocket channel while it is open (_channel.py), else
over HTTP; blobs always over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec

from .._channel import Channel
from .._failover import AsyncFailover, split_urls
from ..protocol import (
    AllowEntry,
    Assignment,
    MissingBlobs,
    MissingBlobsReply,
    ReleaseReason,
    ResultsReply,
    TaskRelease,
    TaskResult,
    WorkerResults,
)
from .cache import FileCache
from .config import WorkerConfig, tls_verify
from .guard import Guard
from .state import WorkerState

__all__ = ["BACKOFF", "Link", "heartbeat_read_timeout", "refusal", "retrying"]

log = logging.getLogger("corral.worker")
BACKOFF = (0.2, 0.5, 1, 2, 4, 8, 8, 8, 15, 15)
_JSON = {"content-type": "application/json"}
_URLS_KEPT = 64


def heartbeat_read_timeout(interval: float) -> float:
    """How long to wait for a heartbeat's answer: the coordinator holds one for at most
    `interval` (the wait it asks for), so silence well past that means the link is gone, and
    the worker moves on before its leases (several intervals long) can run out."""
    return 3 * interval  # a lease is four intervals long


class Link:
    """One HTTP client to the coordinator, and the requests made outside the loops."""

    def __init__(self, config: WorkerConfig, state: WorkerState) -> None:
        self.config = config
        self.state = state
        self.worker_id: str | None = None
        headers = {"authorization": f"Bearer {config.token}"} if config.token else {}
        urls = split_urls(config.server)
        verify = tls_verify(config.server, config.ca_file)
        # several coordinators: move to the next on a connection failure (a cut link shows
        # as a connect timeout, so that is kept short), keeping the leases (_failover.py)
        self.failover = AsyncFailover(urls, httpx.AsyncHTTPTransport(verify=verify))
        self.http = httpx.AsyncClient(
            base_url=urls[0] + "/api/v1",
            headers=headers,
            timeout=httpx.Timeout(
                30.0, connect=5.0 if len(urls) > 1 else 30.0, read=config.lease_wait + 30.0
            ),
            verify=verify,
            transport=self.failover if len(urls) > 1 else None,
        )
        self._urls: dict[str, httpx.URL] = {}
        # the lease, heartbeat and results calls over one WebSocket while it is open (no
        # httpx on the hot path); blobs stay on HTTP
        connect = self.http.timeout.connect or 30.0
        self.channel = Channel(
            config.channel, self.failover.endpoints, config.token, verify, connect
        )

    async def post(self, path: str, body: Any, kind: Any = None, read: float | None = None) -> Any:
        """POST a msgspec body, over the channel when it is open; the reply decoded as `kind`
        (None without one). `read`: this request's read timeout, for one the coordinator
        answers within a known time."""
        t = self.http.timeout
        content = msgspec.json.encode(body)
        if await self.channel.usable():
            reply = await self.channel.post(path, content, read or t.read or 60.0)
            return msgspec.json.decode(reply, type=kind) if kind else None
        timeout = t if read is None else httpx.Timeout(t.write, connect=t.connect, read=read)
        response = await self.http.post(
            self._url(path), content=content, headers=_JSON, timeout=timeout
        )
        response.raise_for_status()
        return msgspec.json.decode(response.content, type=kind) if kind else None

    async def aclose(self) -> None:
        """Close the channel and the HTTP client."""
        await self.channel.aclose()
        await self.http.aclose()

    def _url(self, path: str) -> httpx.URL:
        """The absolute URL of a path under the base URL, parsed once: httpx parses a
        relative one on every request (a fifth of the worker's CPU for a lease call)."""
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= _URLS_KEPT:  # task paths come and go; the loops' stay
                self._urls.clear()
            url = self._urls[path] = httpx.URL(str(self.http.base_url) + path.lstrip("/"))
        return url

    async def fetch(self, sha256: str, dest: Path) -> str:
        """Write a blob to `dest` (the cache's fetch); its hash."""
        data = self.state.inline(sha256)
        if data is not None:  # it came with the lease: a few KiB, written right here
            dest.write_bytes(data)
            return hashlib.sha256(data).hexdigest()
        async with self.http.stream("GET", f"/blobs/{sha256}") as response:
            response.raise_for_status()
            # most blobs are small: over the kept-alive connection; a big one is asked for
            # again below (closing this response stops the coordinator reading it)
            if int(response.headers.get("content-length", 0)) < 16 << 20:
                digest = await FileCache.receive(response.aiter_bytes(), dest)
                log.info("fetched blob %s", sha256)
                return digest
        digest = await asyncio.to_thread(self._download, sha256, dest)
        log.info("fetched blob %s", sha256)
        return digest

    def _download(self, sha256: str, dest: Path) -> str:
        # blocking, in a thread of its own: off the event loop, and straight off the socket
        # where that applies (a 1 GB input was CPU-bound in httpx), else the sync client
        from ._download import download_blob

        tls = tls_verify(self.config.server, self.config.ca_file)
        http = self.http
        digest = download_blob(http, tls, sha256, dest, FileCache.receive_sync)
        if digest is not None:
            return digest
        with (
            httpx.Client(
                base_url=self.failover.endpoints.current + "/api/v1",
                headers=http.headers,
                timeout=http.timeout,
                verify=tls,
            ) as client,
            client.stream("GET", f"/blobs/{sha256}") as response,
        ):
            response.raise_for_status()
            return FileCache.receive_sync(response.iter_bytes(), dest)

    async def upload(self, files: dict[str, Path]) -> None:
        """Upload the files (by hash) that the coordinator does not have yet, riding out a
        coordinator restart rather than failing the task for want of a connection."""
        todo = {sha: path for sha, path in files.items() if sha not in self.state.stored}
        if todo:
            await retrying(lambda: self._upload_once(todo))
            self.state.remember_stored(todo)

    async def _upload_once(self, files: dict[str, Path]) -> None:
        reply = await self.post("/blobs/missing", MissingBlobs(list(files)), MissingBlobsReply)
        for sha in reply.missing:
            path = files[sha]

            async def chunks(p: Path = path) -> Any:
                with p.open("rb") as f:
                    while data := f.read(1024 * 1024):
                        yield data

            response = await self.http.put(f"/blobs/{sha}", content=chunks())
            response.raise_for_status()

    async def refresh_allowlist(self, guard: Guard) -> None:
        """Fetch the coordinator's allowlist (only needed when a list is enforced)."""
        if guard.allow.mode != "list":
            return
        try:
            response = await self.http.get("/allow")
            response.raise_for_status()
            entries = msgspec.json.decode(response.content, type=list[AllowEntry])
        except (httpx.HTTPError, msgspec.DecodeError) as exc:
            log.warning("cannot fetch the coordinator's allowlist: %s", exc)
            return
        guard.allow.remote = {e.sha256 for e in entries}
        guard.allow.remote_inline = {e.sha256 for e in entries if e.allow_inline}

    async def release(self, a: Assignment, reason: ReleaseReason = "busy") -> None:
        """Tell the coordinator to requeue a task given back (its lease expires otherwise)."""
        try:
            await self.post(f"/tasks/{a.task_id}/release", TaskRelease(a.lease_id, reason))
            log.info("gave task %s back to the queue (%s)", a.task_id, reason)
        except httpx.HTTPError as exc:
            log.warning("cannot give task %s back (%s); its lease will expire", a.task_id, exc)

    async def send(self, results: dict[str, TaskResult]) -> ResultsReply | None:
        """One batch of results on its own; None when the coordinator could not be reached."""
        try:
            return await self.post(  # type: ignore[no-any-return]
                f"/workers/{self.worker_id}/results", WorkerResults(results), ResultsReply
            )
        except httpx.TransportError as exc:
            log.warning("coordinator unreachable, results will be sent again: %s", exc)
            return None
        except httpx.HTTPStatusError as exc:
            log.warning("results refused: %s", exc.response.text)
            return refusal(exc, results)


def refusal(exc: httpx.HTTPStatusError, results: dict[str, TaskResult]) -> ResultsReply | None:
    """What a request carrying results that failed with an HTTP error means for them: None
    after a 5xx (the coordinator failed: send them again), else none of them counts (an
    unknown worker)."""
    if exc.response.status_code >= 500:
        return None
    return ResultsReply(stale=list(results))


async def retrying(call: Callable[[], Awaitable[Any]]) -> Any:
    """Retry a call on connection errors with backoff (about a minute in all)."""
    for delay in BACKOFF:
        try:
            return await call()
        except httpx.TransportError as exc:
            log.warning("coordinator unreachable, retrying in %s s: %s", delay, exc)
            await asyncio.sleep(delay)
    return await call()
