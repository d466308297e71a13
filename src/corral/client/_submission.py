"""A Submission: one task to submit, the futures it settles, and how it settles them.

Built by `_tasks.py` from a call or a command, queued and sent by a Dispatcher. A task that
waits for others (`after=`, or futures among a function's arguments) names them by id once
every one of them has been submitted (`dependency_ids`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..protocol import TaskSpec
from ._outcomes import Decoder, Settlement

_InvalidState = (concurrent.futures.InvalidStateError, asyncio.InvalidStateError)


@dataclass(eq=False)
class JobGroup:
    """Submissions that go into one job, made by `client.as_job(...)`; `job_id` once sent."""

    name: str = ""
    speculative: bool = False
    job_id: str | None = None


@dataclass
class Submission:
    """One task to submit and the futures it settles."""

    spec: TaskSpec
    futures: Sequence[Any]  # TaskFuture or AsyncTaskFuture
    decode: Decoder
    blobs: dict[str, bytes] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)  # command inputs, hashed when sent
    after: list[Any] = field(default_factory=list)  # task ids or futures it waits for
    # name in the task directory -> (index in `after`, file that dependency returned)
    after_files: dict[str, tuple[int, str]] = field(default_factory=dict)
    job_name: str = ""
    group: JobGroup | None = None  # submitted into one job with the rest of its group
    task_id: str | None = None

    def cancelled(self) -> bool:
        """Every future it settles was cancelled."""
        return all(f.cancelled() for f in self.futures)

    def assign(self, job_id: str, task_id: str) -> None:
        """Record the ids the coordinator gave this task."""
        self.task_id = task_id
        for f in self.futures:
            f.task_id, f.job_id = task_id, job_id

    def started(self) -> None:
        """The task is running: its futures can no longer be cancelled."""
        for f in self.futures:
            if isinstance(f, concurrent.futures.Future) and not (f.running() or f.done()):
                f.set_running_or_notify_cancel()

    def settle(self, outcomes: list[Settlement]) -> None:
        """Set each future's result or exception, unless it is already done."""
        for f, (ok, value) in zip(self.futures, outcomes, strict=False):
            if f.done():
                continue
            with contextlib.suppress(*_InvalidState):
                if ok:
                    f.set_result(value)
                else:
                    f.set_exception(value)

    def fail(self, exc: BaseException) -> None:
        """Every future gets this exception."""
        self.settle([(False, exc)] * len(self.futures))


def dependency_ids(after: Sequence[Any]) -> list[str] | None:
    """Task ids of `after` (ids or futures); None while some future is not submitted yet."""
    ids = []
    for dep in after:
        task_id = dep if isinstance(dep, str) else getattr(dep, "task_id", None)
        if task_id is None:
            return None
        ids.append(str(task_id))
    return ids


def with_after(spec: TaskSpec, ids: list[str]) -> TaskSpec:
    """The spec holding until the tasks `ids` succeed."""
    if not ids:
        return spec
    return msgspec.structs.replace(spec, after=ids)


__all__ = ["JobGroup", "Submission", "dependency_ids", "with_after"]
