"""The Python API: a synchronous Client over the coordinator's HTTP API.

Every operation is one of the sans-IO generators in `_core`, driven here over httpx.Client;
AsyncClient drives the same generators over httpx.AsyncClient. Futures from `submit`,
`submit_command` and `map` (shared with AsyncClient through `BaseClient`) are settled by one
background thread (`_background.Background`) running an AsyncClient that follows each job's
event stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ..protocol import (
    FINAL_STATUSES,
    AllowEntry,
    AuditEntry,
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
from . import _allow, _security
from . import _core as core
from ._async import AsyncClient
from ._background import Background
from ._base import BaseClient
from ._core import Call, Op, Reply, input_files, sha256_file, some_id
from ._errors import ApiError, ConfigError, CorralError, NotFoundError, Unreachable
from ._futures import TaskFuture
from ._submission import Submission

T = TypeVar("T")


class Client(BaseClient[TaskFuture]):
    """Talks to one coordinator; found from arguments, env vars or the `corral up` config.

    `transport` replaces httpx's network transport (an in-process app in tests). Futures are
    settled by an asyncio loop in a thread, which uses it too: it must then also be an
    httpx.AsyncBaseTransport, as httpx.MockTransport is."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, timeout)
        self._transport = transport
        self._http = httpx.Client(transport=self._sync_transport(transport), **self._http_options())
        self._background: Background | None = None

    def close(self) -> None:
        """Stop following futures and close connections."""
        if self._background is not None:
            self._background.close()
        self._http.close()
        self._release()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # the transport
    def _send(self, call: Call) -> Reply:
        if call.download is not None:
            with self._http.stream(
                call.method, call.path, params=call.params, headers=call.headers
            ) as response:
                if response.status_code >= 400:
                    return Reply(response.status_code, dict(response.headers), response.read())
                with call.download.open("wb") as out:
                    for chunk in response.iter_bytes(core.CHUNK):
                        out.write(chunk)
                return Reply(response.status_code, dict(response.headers), b"")
        content: Any = call.content
        if call.upload is not None:
            content = _file_chunks(call.upload)
        response = self._http.request(
            call.method, call.path, params=call.params, headers=call.headers, content=content
        )
        return Reply(response.status_code, dict(response.headers), response.content)

    def drive(self, op: Op[T]) -> T:
        """Run one core operation over this client's connection."""
        try:
            call = next(op)
            while True:
                try:
                    reply = self._send(call)
                except httpx.TransportError as exc:
                    raise Unreachable(f"cannot reach the coordinator at {self.url}: {exc}") from exc
                call = op.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    # files
    def upload_each(self, paths: Sequence[Path]) -> list[dict[str, InputRef]]:
        """Upload what the coordinator lacks; for each path, its task-relative names and refs."""
        return self.drive(core.upload_plan(core.plan_uploads(paths)))

    def upload(self, paths: Sequence[Path]) -> dict[str, InputRef]:
        """Upload files and directories; map their task-relative names to refs."""
        return {name: ref for refs in self.upload_each(paths) for name, ref in refs.items()}

    def put_blob(self, sha: str, path: Path) -> None:
        """Stream one file to the blob store."""
        self.drive(core.put_blob(sha, path))

    def download(self, sha: str, dest: Path, mode: int = 0o644) -> None:
        """Write one blob to `dest`."""
        self.drive(core.download(sha, dest, mode))

    def read_blob(self, sha: str) -> bytes:
        """One blob, in memory."""
        return self.drive(core.read_blob(sha))

    def fetch(self, task_or_job: Any, to: Path | str, by_name: bool = False) -> list[Path]:
        """Write each finished task's files, stdout and stderr to `to/<task-id>/` (with
        `by_name`, `to/<task-name>/` where names are unique)."""
        return self.drive(core.fetch(some_id(task_or_job), Path(to), by_name))

    # jobs, tasks, workers
    def submit_job(
        self, tasks: list[TaskSpec], name: str = "", speculative: bool = False, priority: int = 0
    ) -> Job:
        """Submit tasks as one job; `speculative` backs up stragglers on other workers;
        `priority` puts it ahead of (higher) or behind the owner's other queued work."""
        op = core.submit_job(tasks, name, speculative=speculative, priority=priority)
        return self.drive(op)

    def add_tasks(self, job_id: str, tasks: list[TaskSpec]) -> list[Task]:
        """Add tasks to a running job (a task's own token may add to its own job)."""
        return self.drive(core.add_tasks(job_id, tasks))

    def set_blocked(self, task_id: str, blocked: bool) -> Task:
        """Mark a running task as waiting on tasks it submitted, or no longer waiting."""
        return self.drive(core.set_blocked(task_id, blocked))

    def jobs(
        self,
        limit: int = 100,
        *,
        status: str | None = None,
        owner: str | None = None,
        offset: int = 0,
    ) -> list[Job]:
        """Newest jobs first; optionally of one status, or (for an admin) one owner's."""
        return self.drive(core.jobs(limit, status, owner, offset))

    def find_ids(self, prefix: str, name: str | None = None, limit: int = 20) -> list[IdMatch]:
        """Jobs and tasks whose id starts with `prefix` (lowercase hex); with `name`, the
        tasks of that name in the jobs it starts."""
        return self.drive(core.find_ids(prefix, name, limit))

    def job(self, job_id: str) -> Job:
        """One job."""
        return self.drive(core.job(job_id))

    def tasks(self, job_id: str) -> list[Task]:
        """All of a job's tasks, in submission order."""
        return self.drive(core.tasks(job_id))

    def task(self, task_id: str) -> Task:
        """One task."""
        return self.drive(core.task(task_id))

    def checkpoints(self, task_id: str) -> list[CheckpointInfo]:
        """A task's saved checkpoints (time, size, attempt), oldest first."""
        return self.drive(core.checkpoints(task_id))

    def workers(self) -> list[Worker]:
        """All workers the coordinator knows."""
        return self.drive(core.workers())

    def drain_worker(self, worker_id: str, evict: bool = False) -> Worker:
        """Ask a worker to take no new tasks and leave once its running ones are finished,
        or with `evict` evicted (checkpoint saved) and requeued."""
        return self.drive(core.drain_worker(worker_id, evict))

    # the executable allowlist
    def allowed(self) -> list[AllowEntry]:
        """The coordinator-wide executable allowlist."""
        return self.drive(_allow.allow_list())

    def allow(self, sha256: str, note: str = "", allow_inline: bool = False) -> AllowEntry:
        """Allow the program with this sha256 on every worker that enforces the list; for an
        interpreter, `allow_inline` lets it run code not in a file (-c, -e, shell lines)."""
        return self.drive(_allow.allow_add(sha256, note, allow_inline))

    def disallow(self, sha256: str) -> None:
        """Take a program off the allowlist."""
        self.drive(_allow.allow_remove(sha256))

    # tokens and the audit log (admin)
    def create_token(
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
        return self.drive(_security.create_token(name, role, owner, expires, share, max_slots))

    def tokens(self) -> list[TokenInfo]:
        """Every token (never their secrets)."""
        return self.drive(_security.tokens())

    def revoke_token(self, token_id: str) -> TokenInfo:
        """Revoke a token: it stops working at once."""
        return self.drive(_security.revoke_token(token_id))

    def audit(self, after: int = 0, limit: int = 1000, newest: bool = False) -> list[AuditEntry]:
        """Audit entries after sequence number `after`, oldest first; with `newest`, the
        newest `limit` entries, newest first."""
        return self.drive(_security.audit(after, limit, newest))

    def scale(self) -> ScaleStatus:
        """The autoscaler: its providers, recent launches and latest reasons (admin)."""
        return self.drive(_security.scale())

    def find(self, some_id: str) -> Job | Task:
        """A job or a task by its id."""
        return self.drive(core.find(some_id))

    def kill(self, some_id: str, checkpoint: bool = False) -> Job | Task:
        """Kill a job's live tasks, or one task; with `checkpoint`, running ones are evicted
        first (SIGTERM, the worker's grace period, their checkpoint saved) and end killed
        once that is done, their checkpoints kept for `retry(job, killed=True)`."""
        return self.drive(core.kill(some_id, checkpoint))

    def retry(self, job_id: str, killed: bool = False) -> Job:
        """Requeue a job's failed tasks as new attempts, and with `killed` its killed ones;
        each starts from its last good checkpoint, if it saved one."""
        return self.drive(core.retry(job_id, killed))

    def log(
        self, task_id: str, stream: str = "stdout", offset: int = 0, tail: int = 0
    ) -> tuple[bytes, bool]:
        """Bytes of a task's output from `offset` (or its last `tail` bytes), and whether no
        more will come."""
        return self.drive(core.log(task_id, stream, offset, tail))

    # events
    def events(self, job_id: str, after: int = 0, detail: bool = False) -> Iterator[Event]:
        """Task state changes of a job as they happen, until the job is done (SSE); with
        `detail`, final events carry the task and its small output files."""
        call = core.events_call(job_id, after, detail)
        try:
            with self._http.stream(
                "GET",
                call.path,
                params=call.params,
                headers=call.headers,
                timeout=httpx.Timeout(30.0, read=60.0),
            ) as response:
                if response.status_code >= 400:
                    core.check(Reply(response.status_code, {}, response.read()))
                yield from core.parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the coordinator at {self.url}: {exc}") from exc

    def as_completed(self, job: Job | str, reconnect_for: float = 30.0) -> Iterator[Task]:
        """Each of a job's tasks as it reaches a final status, over the event stream."""
        job_id, after, seen = core.job_id_of(job), 0, set()
        give_up = time.monotonic() + reconnect_for
        while True:
            try:
                for event in self.events(job_id, after):
                    after = event.seq
                    if event.status in FINAL_STATUSES and event.task_id not in seen:
                        seen.add(event.task_id)
                        yield self.task(event.task_id)
                return
            except Unreachable:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.5)  # resume after the last event seen

    # futures
    def _future(self) -> TaskFuture:
        return TaskFuture()

    def _enqueue(self, subs: list[Submission]) -> None:
        if self._background is None:
            self._background = Background(self._twin)
        self._background.enqueue(subs)

    def _twin(self) -> AsyncClient:
        """An AsyncClient to the same coordinator, for the thread that settles futures."""
        transport = self._transport
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(
                "futures are settled by an asyncio loop: give Client a transport that is "
                "also an httpx.AsyncBaseTransport"
            )
        return AsyncClient(self.url, self.token, self.timeout, transport=transport)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while data := f.read(core.CHUNK):
            yield data


__all__ = [
    "ApiError",
    "Client",
    "ConfigError",
    "CorralError",
    "NotFoundError",
    "Unreachable",
    "input_files",
    "sha256_file",
]
