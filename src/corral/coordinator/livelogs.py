"""What running tasks show while they run, as it arrives in heartbeats: their output (one
file per task and stream) and their live usage (LiveSamples, in memory).

A worker sends its running tasks' new stdout and stderr bytes with each heartbeat, each chunk
with the offset it starts at; a chunk that does not continue the file is dropped, unless it
starts at 0 (a new attempt starts its output afresh). Once a task is final its output is the
blob its result named, and the live file is no longer read.

Each heartbeat also carries a sample of each running task's CPU and memory (worker/usage.py);
the coordinator that hears it keeps the latest one per task, replacing all of that worker's
at each heartbeat, and shows it with the task while it runs. Samples are not stored: they
are stale within seconds, and with several coordinators only the one a worker's heartbeats
reach shows them (as with live output, which lives in one coordinator's files).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

from ..protocol import FINAL_STATUSES, LogChunk, Task, TaskSample
from .blobs import Blobs
from .store import NotFound, Store

__all__ = ["LiveLogs", "LiveSamples"]


class LiveSamples:
    """The latest usage sample of each running task, by worker (pure, in memory)."""

    def __init__(self) -> None:
        self._by_worker: dict[str, dict[str, TaskSample]] = {}

    def heard(self, worker_id: str, samples: Iterable[TaskSample], now: float) -> None:
        """A heartbeat's samples: they replace whatever that worker sent before."""
        self._by_worker[worker_id] = {
            s.task_id: msgspec.structs.replace(
                s, usage=msgspec.structs.replace(s.usage, sampled=now)
            )
            for s in samples
        }

    def attach(self, tasks: Sequence[Task]) -> list[Task]:
        """`tasks`, each running one with its worker's latest sample of it (if any)."""
        out = []
        for task in tasks:
            found = None
            if task.status == "running" and task.worker_id is not None:
                found = self._by_worker.get(task.worker_id, {}).get(task.id)
            out.append(msgspec.structs.replace(task, live=found.usage) if found else task)
        return out


class LiveLogs:
    """The live output files under `live_dir`, and where a task's output is."""

    def __init__(self, live_dir: Path, store: Store, blobs: Blobs) -> None:
        self.live_dir, self.store, self.blobs = live_dir, store, blobs
        live_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, task_id: str, stream: str) -> Path:
        return self.live_dir / f"{task_id}.{stream}"

    def append(self, chunk: LogChunk) -> None:
        """Add a chunk of a running task's output."""
        try:
            task = self.store.get_task(chunk.task_id)
        except NotFound:
            return
        if task.status != "running":
            return
        path = self._path(chunk.task_id, chunk.stream)
        size = path.stat().st_size if path.exists() else 0
        if chunk.offset == size:
            with path.open("ab") as f:
                f.write(chunk.data)
        elif chunk.offset == 0:  # a new attempt starts its output afresh
            path.write_bytes(chunk.data)

    def where(self, task: Task, stream: str) -> tuple[Path | None, bool]:
        """Where a task's output is, and whether it is final."""
        sha = task.stdout if stream == "stdout" else task.stderr
        if task.status in FINAL_STATUSES:
            return (self.blobs.path(sha) if sha else None), True
        path = self._path(task.id, stream)
        return (path if path.exists() else None), False
