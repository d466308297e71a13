"""AsyncClient: the same core operations as Client, driven over httpx.AsyncClient.

Nothing here re-implements an operation: each method drives a `_core` generator. Futures are
asyncio futures, settled by a Dispatcher in the caller's event loop; the methods that make
them (`submit`, `map`, ...) are shared with Client through `BaseClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from .._failover import AsyncFailover, Endpoints, split_urls
from ..protocol import (
    CHANNEL_MODES,
    FINAL_STATUSES,
    AllowEntry,
    AuditEntry,
    ChannelMode,
    CheckpointInfo,
    Event,
    IdMatch,
    InputRef,
    Job,
    ScaleStatus,
    Task,
    TaskSpec,
    TokenCreated,
    TokenInfo,
    Worker,
)
from ..protocol import Call as ChannelCall
from . import _allow, _security
from . import _core as core
from ._base import BaseClient
from ._core import Call, Op, Reply, some_id
from ._dispatch import Dispatcher
from ._errors import ConfigError, Unreachable
from ._futures import AsyncTaskFuture
from ._submission import Submission

if TYPE_CHECKING:
    from .._channel import Channel

T = TypeVar("T")
_EVENTS_READ = 60.0  # seconds between two parts of an event stream (keepalives every 15)


class AsyncClient(BaseClient[AsyncTaskFuture]):
    """The asyncio twin of Client: `await client.jobs()`, `await client.submit(f, x)`.

    `transport` replaces httpx's network transport (an in-process app in tests). `channel`:
    whether calls and job events go over one WebSocket (_channel.py) once futures are
    followed (auto: when the coordinator has one; ws; http), default CORRAL_CHANNEL or auto."""

    job_scope: str | None = None  # set: futures' tasks are added to this job (_current.py)

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        channel: ChannelMode | None = None,
    ) -> None:
        super().__init__(url, token, timeout)
        self._http = httpx.AsyncClient(
            transport=self._async_transport(transport), **self._http_options()
        )
        self._dispatcher: Dispatcher | None = None
        self._channel = self._make_channel(channel, transport)

    def _make_channel(
        self, mode: ChannelMode | None, transport: httpx.AsyncBaseTransport | None
    ) -> Channel | None:
        """The WebSocket channel (mode: as given, else CORRAL_CHANNEL, else auto), opened by
        `_open_channel`; None for plain HTTP (also with a transport of the caller's, or over a
        worker's relay, which carries HTTP only)."""
        mode = mode or os.environ.get("CORRAL_CHANNEL") or "auto"  # type: ignore[assignment]
        if mode not in CHANNEL_MODES:
            raise ConfigError(f"CORRAL_CHANNEL={mode}: choose one of {', '.join(CHANNEL_MODES)}")
        if mode == "http" or transport is not None or self._unix is not None:
            return None
        from .._channel import Channel  # imports websockets: only for a client that uses it

        failover = self._http._transport  # the failover list, when several URLs
        urls = split_urls(self.url)
        endpoints = failover.endpoints if isinstance(failover, AsyncFailover) else Endpoints(urls)
        return Channel(mode, endpoints, self.token, self._verify, min(self.timeout, 5.0))

    def _open_channel(self) -> None:
        """Open the channel and keep it open (a client that follows futures): submissions
        and job events then go over it. Needs a running loop."""
        if self._channel is not None:
            self._channel.start()

    async def aclose(self) -> None:
        """Stop following futures and close connections."""
        if self._dispatcher is not None:
            await self._dispatcher.aclose()
        if self._channel is not None:
            await self._channel.aclose()
        await self._http.aclose()
        self._release()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # the transport
    async def _send(self, call: Call) -> Reply:
        if not call.blob and self._channel is not None and await self._channel.usable():
            frame = ChannelCall(0, call.method, call.target, call.content or b"")
            answer = await self._channel.call(frame, self.timeout)
            return Reply(answer.status, {}, answer.body)
        if call.download is not None:
            async with self._http.stream(
                call.method, call.path, params=call.params, headers=call.headers
            ) as response:
                if response.status_code >= 400:
                    body = await response.aread()
                    return Reply(response.status_code, dict(response.headers), body)
                with call.download.open("wb") as out:
                    async for chunk in response.aiter_bytes(core.CHUNK):
                        out.write(chunk)
                return Reply(response.status_code, dict(response.headers), b"")
        content: Any = call.content
        if call.upload is not None:
            content = _file_chunks(call.upload)
        response = await self._http.request(
            call.method, call.path, params=call.params, headers=call.headers, content=content
        )
        return Reply(response.status_code, dict(response.headers), response.content)

    async def drive(self, op: Op[T]) -> T:
        """Run one core operation over this client's connection."""
        try:
            call = next(op)
            while True:
                try:
                    reply = await self._send(call)
                except httpx.TransportError as exc:
                    raise Unreachable(f"cannot reach the coordinator at {self.url}: {exc}") from exc
                call = op.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    # files
    async def upload_each(self, paths: Sequence[Path]) -> list[dict[str, InputRef]]:
        """Upload what the coordinator lacks; for each path, its task-relative names and refs."""
        plan = await asyncio.to_thread(core.plan_uploads, paths)
        return await self.drive(core.upload_plan(plan))

    async def upload(self, paths: Sequence[Path]) -> dict[str, InputRef]:
        """Upload files and directories; map their task-relative names to refs."""
        return {name: ref for refs in await self.upload_each(paths) for name, ref in refs.items()}

    async def put_blob(self, sha: str, path: Path) -> None:
        """Stream one file to the blob store."""
        await self.drive(core.put_blob(sha, path))

    async def download(self, sha: str, dest: Path, mode: int = 0o644) -> None:
        """Write one blob to `dest`."""
        await self.drive(core.download(sha, dest, mode))

    async def read_blob(self, sha: str) -> bytes:
        """One blob, in memory."""
        return await self.drive(core.read_blob(sha))

    async def fetch(self, task_or_job: Any, to: Path | str, by_name: bool = False) -> list[Path]:
        """Write each finished task's files, stdout and stderr to `to/<task-id>/` (with
        `by_name`, `to/<task-name>/` where names are unique)."""
        return await self.drive(core.fetch(some_id(task_or_job), Path(to), by_name))

    # jobs, tasks, workers
    async def submit_job(
        self, tasks: list[TaskSpec], name: str = "", speculative: bool = False, priority: int = 0
    ) -> Job:
        """Submit tasks as one job; `speculative` backs up stragglers on other workers;
        `priority` puts it ahead of (higher) or behind the owner's other queued work."""
        op = core.submit_job(tasks, name, speculative=speculative, priority=priority)
        return await self.drive(op)

    async def add_tasks(self, job_id: str, tasks: list[TaskSpec]) -> list[Task]:
        """Add tasks to a running job (a task's own token may add to its own job)."""
        return await self.drive(core.add_tasks(job_id, tasks))

    async def set_blocked(self, task_id: str, blocked: bool) -> Task:
        """Mark a running task as waiting on tasks it submitted, or no longer waiting."""
        return await self.drive(core.set_blocked(task_id, blocked))

    async def jobs(
        self,
        limit: int = 100,
        *,
        status: str | None = None,
        owner: str | None = None,
        offset: int = 0,
    ) -> list[Job]:
        """Newest jobs first; optionally of one status, or (for an admin) one owner's."""
        return await self.drive(core.jobs(limit, status, owner, offset))

    async def find_ids(
        self, prefix: str, name: str | None = None, limit: int = 20
    ) -> list[IdMatch]:
        """Jobs and tasks whose id starts with `prefix` (lowercase hex); with `name`, the
        tasks of that name in the jobs it starts."""
        return await self.drive(core.find_ids(prefix, name, limit))

    async def job(self, job_id: str) -> Job:
        """One job."""
        return await self.drive(core.job(job_id))

    async def tasks(self, job_id: str) -> list[Task]:
        """All of a job's tasks, in submission order."""
        return await self.drive(core.tasks(job_id))

    async def task(self, task_id: str) -> Task:
        """One task."""
        return await self.drive(core.task(task_id))

    async def checkpoints(self, task_id: str) -> list[CheckpointInfo]:
        """A task's saved checkpoints (time, size, attempt), oldest first."""
        return await self.drive(core.checkpoints(task_id))

    async def workers(self) -> list[Worker]:
        """All workers the coordinator knows."""
        return await self.drive(core.workers())

    async def drain_worker(self, worker_id: str, evict: bool = False) -> Worker:
        """Ask a worker to take no new tasks and leave once its running ones are finished,
        or with `evict` evicted (checkpoint saved) and requeued."""
        return await self.drive(core.drain_worker(worker_id, evict))

    # the executable allowlist
    async def allowed(self) -> list[AllowEntry]:
        """The coordinator-wide executable allowlist."""
        return await self.drive(_allow.allow_list())

    async def allow(self, sha256: str, note: str = "", allow_inline: bool = False) -> AllowEntry:
        """Allow the program with this sha256 on every worker that enforces the list; for an
        interpreter, `allow_inline` lets it run code not in a file (-c, -e, shell lines)."""
        return await self.drive(_allow.allow_add(sha256, note, allow_inline))

    async def disallow(self, sha256: str) -> None:
        """Take a program off the allowlist."""
        await self.drive(_allow.allow_remove(sha256))

    # tokens and the audit log (admin)
    async def create_token(
        self,
        name: str,
        role: str,
        owner: str = "",
        expires: float | None = None,
        share: float | None = None,
        max_slots: int | None = None,
    ) -> TokenCreated:
        """Make a token; its secret is in the answer, and nowhere else ever again. `share`
        and `max_slots` set its owner's fair-share weight and cap on running slots."""
        op = _security.create_token(name, role, owner, expires, share, max_slots)
        return await self.drive(op)

    async def tokens(self) -> list[TokenInfo]:
        """Every token (never their secrets)."""
        return await self.drive(_security.tokens())

    async def revoke_token(self, token_id: str) -> TokenInfo:
        """Revoke a token: it stops working at once."""
        return await self.drive(_security.revoke_token(token_id))

    async def audit(
        self, after: int = 0, limit: int = 1000, newest: bool = False
    ) -> list[AuditEntry]:
        """Audit entries after sequence number `after`, oldest first; with `newest`, the
        newest `limit` entries, newest first."""
        return await self.drive(_security.audit(after, limit, newest))

    async def scale(self) -> ScaleStatus:
        """The autoscaler: its providers, recent launches and latest reasons (admin)."""
        return await self.drive(_security.scale())

    async def find(self, some_id: str) -> Job | Task:
        """A job or a task by its id."""
        return await self.drive(core.find(some_id))

    async def kill(self, some_id: str, checkpoint: bool = False) -> Job | Task:
        """Kill a job's live tasks, or one task; with `checkpoint`, running ones are evicted
        first (SIGTERM, the worker's grace period, their checkpoint saved) and end killed
        once that is done, their checkpoints kept for `retry(job, killed=True)`."""
        return await self.drive(core.kill(some_id, checkpoint))

    async def retry(self, job_id: str, killed: bool = False) -> Job:
        """Requeue a job's failed tasks as new attempts, and with `killed` its killed ones;
        each starts from its last good checkpoint, if it saved one."""
        return await self.drive(core.retry(job_id, killed))

    async def log(
        self, task_id: str, stream: str = "stdout", offset: int = 0, tail: int = 0
    ) -> tuple[bytes, bool]:
        """Bytes of a task's output from `offset` (or its last `tail` bytes), and whether no
        more will come."""
        return await self.drive(core.log(task_id, stream, offset, tail))

    # events
    async def events(
        self, job_id: str, after: int = 0, detail: bool = False
    ) -> AsyncGenerator[Event, None]:
        """Task state changes of a job as they happen, until the job is done (SSE); with
        `detail`, final events carry the task and its small output files."""
        call = core.events_call(job_id, after, detail)
        decoder = core.SSEDecoder()
        try:
            if self._channel is not None and await self._channel.usable():
                async for pushed in self._pushed(call, decoder):
                    yield pushed
                return
            async with self._http.stream(
                "GET",
                call.path,
                params=call.params,
                headers=call.headers,
                timeout=httpx.Timeout(30.0, read=60.0),
            ) as response:
                if response.status_code >= 400:
                    core.check(Reply(response.status_code, {}, await response.aread()))
                async for line in response.aiter_lines():
                    event = decoder.feed(line)
                    if event is not None:
                        yield event
                    if decoder.done:
                        return
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the coordinator at {self.url}: {exc}") from exc

    async def _pushed(self, call: Call, decoder: core.SSEDecoder) -> AsyncGenerator[Event, None]:
        """The events of `call` pushed over the channel: the same SSE text, a frame a part."""
        assert self._channel is not None
        stream = self._channel.stream(ChannelCall(0, "GET", call.target), _EVENTS_READ)
        async with contextlib.aclosing(stream) as parts:
            async for part in parts:
                if part.status >= 400:
                    core.check(Reply(part.status, {}, part.body))
                for event in decoder.feed_text(part.body.decode()):
                    yield event
                if decoder.done:
                    return

    async def as_completed(
        self, job: Job | str, reconnect_for: float = 30.0
    ) -> AsyncIterator[Task]:
        """Each of a job's tasks as it reaches a final status, over the event stream."""
        job_id, after, seen = core.job_id_of(job), 0, set()
        give_up = time.monotonic() + reconnect_for
        while True:
            try:
                async for event in self.events(job_id, after):
                    after = event.seq
                    if event.status in FINAL_STATUSES and event.task_id not in seen:
                        seen.add(event.task_id)
                        yield await self.task(event.task_id)
                return
            except Unreachable:
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.5)

    # futures: call `submit`, `map`, ... inside a running event loop
    def _future(self) -> AsyncTaskFuture:
        return AsyncTaskFuture()

    def _enqueue(self, subs: list[Submission]) -> None:
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(self)
        self._dispatcher.enqueue(subs)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while data := f.read(core.CHUNK):
            yield data


__all__ = ["AsyncClient"]
