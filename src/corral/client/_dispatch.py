"""The Dispatcher: batch submissions into jobs, follow each job's event stream, settle futures.

One `Dispatcher` lives in one event loop: the caller's for AsyncClient, a background thread's
for Client and Executor (`_background.py`). Submissions queue up while a batch is being sent,
so a burst of `submit` calls becomes a few jobs, not one job per call. Each job is followed
over its SSE stream (resumed with Last-Event-ID after a dropped connection): `running` moves a
future out of PENDING, so only queued work can be cancelled; a final status fetches the task
(and, for function tasks, its result blob) and settles the future. Nothing polls per future.

A cancelled future kills its task on the farm; a future cancelled before its batch is sent is
simply never submitted.

The Dispatcher knows its client only as a `FarmClient` (AsyncClient is the one there is), so
this module does not import the clients that use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec

from ..protocol import FINAL_STATUSES, Event
from . import _core as core
from ._deps import with_after_files
from ._errors import ApiError, CorralError, Unreachable
from ._functions import RESULT_FILE, TaskFailed
from ._outcomes import Settlement
from ._submission import Submission, dependency_ids, with_after

T = TypeVar("T")

MAX_BATCH = 5000  # tasks per job
MAX_BATCH_BYTES = 64 << 20  # input files hashed and uploaded before a batch is submitted
RECONNECT_FOR = 60.0  # seconds to keep trying to resume a dropped event stream
_TAIL = 1000  # bytes of stderr attached to a TaskFailed


def _new_input_bytes(sub: Submission, seen: set[Path]) -> int:
    """Bytes of `sub`'s input files not yet in `seen` (added to it). A directory counts
    nothing: walking it here would cost what hashing it does."""
    added = 0
    for path in sub.paths:
        if path not in seen:
            seen.add(path)
            with contextlib.suppress(OSError):
                added += path.stat().st_size if path.is_file() else 0
    return added


class FarmClient(Protocol):
    """What a Dispatcher needs of its client: AsyncClient's transport half."""

    job_scope: str | None  # set: submissions are added to this job (_current.py)

    async def drive(self, op: core.Op[T]) -> T:
        """Run one core operation."""
        ...

    def events(
        self, job_id: str, after: int = 0, detail: bool = False
    ) -> AsyncGenerator[Event, None]:
        """A job's task events from `after` on, until the job is done."""
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...

    def _open_channel(self) -> None:
        """Open the persistent channel, if the client has one (protocol/_channel.py)."""
        ...


class Dispatcher:
    """Sends batches and follows their jobs, in one event loop."""

    def __init__(self, client: FarmClient) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self._pending: list[Submission] = []
        self._flushing = False
        self._sent: set[str] = set()  # blob hashes the coordinator already has
        self._hashed: dict[core.FileKey, str] = {}  # input files hashed, while unchanged
        self._jobs: dict[int, dict[str, Submission]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fetching = asyncio.Semaphore(16)
        # submissions and job events over one WebSocket from now on (HTTP until it is open)
        client._open_channel()

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def enqueue(self, subs: list[Submission]) -> None:
        """Queue submissions (call in the loop's thread); they go out with the next batch."""
        for sub in subs:
            for f in sub.futures:
                f.add_done_callback(lambda _, s=sub: self._on_done(s))
        self._pending += subs
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush())

    def _on_done(self, sub: Submission) -> None:
        # a future's callback may run in any thread: hop onto the loop
        if sub.task_id and sub.cancelled() and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._kill, sub.task_id)

    def _kill(self, task_id: str) -> None:
        async def kill() -> None:
            with contextlib.suppress(CorralError):
                await self.client.drive(core.kill_task(task_id))

        self._spawn(kill())

    def _next_batch(self) -> list[Submission]:
        batch: list[Submission] = []
        seen: set[Path] = set()  # input files of the batch
        size = 0  # ... and their bytes
        while self._pending and len(batch) < MAX_BATCH:
            sub = self._pending[0]
            if sub.cancelled():
                self._pending.pop(0)
                continue
            if batch and sub.group is not batch[0].group:
                break  # one job per batch: an `as_job` group is a job of its own
            size += _new_input_bytes(sub, seen)
            if batch and size > MAX_BATCH_BYTES:
                break  # let the first tasks run while later inputs are hashed and sent
            ids = dependency_ids(sub.after)
            if ids is None and batch:
                break  # a dependency is in this batch: send it first
            self._pending.pop(0)
            if ids is None:
                sub.fail(CorralError("after=: a dependency was never submitted"))
                continue
            sub.spec = with_after(sub.spec, ids)
            sub.spec = with_after_files(sub.spec, ids, sub.after_files)
            batch.append(sub)
        return batch

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._next_batch()
                if batch:
                    try:
                        await self._send(batch)
                    except Exception as exc:
                        for sub in batch:
                            sub.fail(exc)
        finally:
            self._flushing = False

    async def _inputs(self, batch: list[Submission]) -> dict[str, Path | bytes]:
        blobs: dict[str, Path | bytes] = {}
        for sub in batch:
            blobs.update(sub.blobs)
            if sub.paths:
                plan = await asyncio.to_thread(core.plan_uploads, sub.paths, self._hashed)
                refs = {name: ref for per_path in plan.refs for name, ref in per_path.items()}
                sub.spec = msgspec.structs.replace(sub.spec, inputs={**refs, **sub.spec.inputs})
                blobs.update(plan.files)
        return {sha: data for sha, data in blobs.items() if sha not in self._sent}

    async def _send(self, batch: list[Submission]) -> None:
        blobs = await self._inputs(batch)
        specs = [s.spec for s in batch]
        group = batch[0].group
        # inside a task, children join its job; a group's later batches join the group's
        job_id = self.client.job_scope or (group.job_id if group else None)
        inline: dict[str, bytes] = {}
        if job_id is None:  # small inputs go inside the submit itself
            inline, blobs = core.split_inline(blobs)
        await self.client.drive(core.upload(blobs))
        self._sent.update(blobs)
        if job_id is not None:
            ids = [t.id for t in await self.client.drive(core.add_tasks(job_id, specs))]
        else:
            name = group.name if group and group.name else batch[0].job_name
            speculative = group.speculative if group else False
            job = await self.client.drive(core.submit_job(specs, name, inline, speculative))
            self._sent.update(inline)
            job_id, ids = job.id, job.task_ids
            if group is not None:
                group.job_id = job_id
        waiting = {}
        for sub, task_id in zip(batch, ids, strict=True):
            sub.assign(job_id, task_id)
            waiting[task_id] = sub
            if sub.cancelled():
                self._kill(task_id)
        self._jobs[id(waiting)] = waiting  # several batches may share one job
        self._spawn(self._follow(job_id, waiting))

    def _on_event(self, event: Event, waiting: dict[str, Submission]) -> None:
        sub = waiting.get(event.task_id)
        if sub is None:
            return
        if event.status == "running":
            sub.started()
        elif event.status in FINAL_STATUSES:
            del waiting[event.task_id]
            if not self._settle_from(event, sub):
                self._spawn(self._resolve(sub, event.task_id))

    async def _follow(self, job_id: str, waiting: dict[str, Submission]) -> None:
        after, give_up = 0, 0.0
        while waiting:
            try:
                stream = self.client.events(job_id, after, detail=True)
                async with contextlib.aclosing(stream) as events:
                    async for event in events:
                        after = event.seq
                        self._on_event(event, waiting)
                        if not waiting:  # a task's own job goes on after its children end
                            break
                give_up = 0.0
                if not waiting:  # all settled: no need to ask how the job stands
                    break
                if (await self.client.drive(core.job(job_id))).status in FINAL_STATUSES:
                    break
            except (Unreachable, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status < 500:
                    break
                give_up = give_up or time.monotonic() + RECONNECT_FOR
                if time.monotonic() > give_up:
                    for sub in waiting.values():
                        sub.fail(exc)
                    waiting.clear()
            if waiting:
                await asyncio.sleep(0.2)
        for task_id, sub in list(waiting.items()):  # anything the stream did not tell us
            self._spawn(self._resolve(sub, task_id))
        waiting.clear()
        self._jobs.pop(id(waiting), None)

    def _settle_from(self, event: Event, sub: Submission) -> bool:
        """Settle from what a detailed event carries, when it carries all that is needed."""
        task = event.task
        if task is None:
            return False
        entry = task.manifest.get(RESULT_FILE)
        data = None
        if entry is not None and task.status in ("succeeded", "failed"):
            data = event.files.get(entry.sha256)
            if data is None:
                return False  # too large to come inline: fetched on its own
        if data is None and task.stderr and task.status != "succeeded":
            return False  # the explanation is worth a request
        try:
            sub.settle(sub.decode(task, data))
        except Exception as exc:
            sub.fail(exc)
        return True

    async def _resolve(self, sub: Submission, task_id: str) -> None:
        async with self._fetching:
            try:
                task = await self.client.drive(core.task(task_id))
                data = None
                entry = task.manifest.get(RESULT_FILE)
                if entry is not None and task.status in ("succeeded", "failed"):
                    data = await self.client.drive(core.read_blob(entry.sha256))
                outcomes = sub.decode(task, data)
                if data is None and task.stderr and task.status != "succeeded":
                    await self._explain(outcomes, task.stderr)
                sub.settle(outcomes)
            except Exception as exc:
                sub.fail(exc)

    async def _explain(self, outcomes: list[Settlement], stderr: str) -> None:
        # a task that left no result says why on stderr: attach its end to the error
        tail = (await self.client.drive(core.read_blob(stderr)))[-_TAIL:]
        for ok, value in outcomes:
            if not ok and isinstance(value, TaskFailed) and tail.strip():
                value.add_note("stderr ends with:\n" + tail.decode(errors="replace").rstrip())

    async def aclose(self) -> None:
        """Stop following; futures still open get an error."""
        closed = CorralError("the client was closed before this task finished")
        for sub in self._pending:
            sub.fail(closed)
        for waiting in self._jobs.values():
            for sub in waiting.values():
                sub.fail(closed)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


__all__ = ["MAX_BATCH", "MAX_BATCH_BYTES", "RECONNECT_FOR", "Dispatcher", "FarmClient"]
