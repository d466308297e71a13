"""Running tasks' output as it arrives in heartbeats: one file per task and stream.

A worker sends its running tasks' new stdout and stderr bytes with each heartbeat, each chunk
with the offset it starts at; a chunk that does not continue the file is dropped, unless it
starts at 0 (a new attempt starts its output afresh). Once a task is final its output is the
blob its result named, and the live file is no longer read.
"""

from __future__ import annotations

from pathlib import Path

from ..protocol import FINAL_STATUSES, LogChunk, Task
from .blobs import Blobs
from .store import NotFound, Store

__all__ = ["LiveLogs"]


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
