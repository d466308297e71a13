"""The coordinator's side of checkpoints: record a worker's save, hand the checkpoint to
restore with each lease, and discredit one an attempt failed straight after restoring.

The decisions are checkpoints.py's (pure); the rows are the store's (store/_checkpoints.py).
The worker uploads a checkpoint's files as ordinary blobs first and then records them here in
one request, so a save is one transaction: a worker that dies between the two leaves unused
blobs and the previous checkpoint in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..protocol import (
    Assignment,
    CheckpointInfo,
    CheckpointSave,
    CheckpointSaved,
    TaskResult,
    checkpoint_problems,
)
from .blobs import Blobs
from .checkpoints import Saved, blame, restore_from
from .errors import ApiError
from .store import Store

__all__ = ["Resume"]


class Resume:
    """Checkpoints between the API, the store and the lease path."""

    def __init__(self, store: Store, blobs: Blobs, clock: Callable[[], float]) -> None:
        self.store = store
        self.blobs = blobs
        self.clock = clock

    def save(self, task_id: str, body: CheckpointSave) -> CheckpointSaved:
        """Record a running task's checkpoint, fenced by its lease (409 when it is stale)."""
        problems = checkpoint_problems(body)
        if not body.files:
            problems.append("files: a checkpoint needs at least one file")
        if problems:
            raise ApiError("invalid_argument", problems[0])
        for name, f in body.files.items():
            if not self.blobs.has(f.sha256):
                raise ApiError("invalid_argument", f"files[{name!r}]: blob was never uploaded")
        n = self.store.save_checkpoint(task_id, body.lease_id, body.files, self.clock())
        if n is None:
            raise ApiError("stale_lease", f"lease {body.lease_id} no longer holds task {task_id}")
        return CheckpointSaved(n)

    def listed(self, task_id: str) -> list[CheckpointInfo]:
        """A task's saved checkpoints, oldest first."""
        return self.store.checkpoints([task_id]).get(task_id, [])

    def attach(self, assignments: Iterable[Assignment]) -> None:
        """Give each granted task the checkpoint it starts from (none: from scratch)."""
        todo = {a.task_id: a for a in assignments}
        if not todo:
            return
        for task_id, infos in self.store.checkpoints(list(todo)).items():
            n = restore_from([Saved(i.n, i.bad) for i in infos])
            if n is not None:
                todo[task_id].checkpoint = self.store.checkpoint_files(task_id, n)

    def after(self, finished: Iterable[tuple[str, TaskResult, bool]]) -> None:
        """Recorded attempts (task id, result, succeeded): a failed one that restored a
        checkpoint and saved nothing newer discredits it."""
        failed = {t: r.restored for t, r, ok in finished if not ok and r.restored is not None}
        if not failed:
            return
        for task_id, infos in self.store.checkpoints(list(failed)).items():
            saved = [Saved(i.n, i.bad) for i in infos]
            bad = blame(failed[task_id], saved, succeeded=False)
            if bad is not None:
                self.store.discredit_checkpoint(task_id, bad)
