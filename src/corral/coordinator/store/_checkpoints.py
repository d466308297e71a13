"""Tasks' saved checkpoints, for SQLStore (_sql.py); the decisions are checkpoints.py's.

A checkpoint is one row: its files (a manifest of blobs the worker uploaded first) and their
total size, numbered 1, 2, ... per task. Recording one is one transaction, fenced by the
saving attempt's live lease: a save cut short before it (the worker killed mid-upload) leaves
no row, so the previous checkpoint stays the one restored. The same transaction drops what
`kept` says to.

The templates' `?` are rendered for the backend's dialect; a statement inside `_tx` shares
its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ...protocol import Checkpoint, CheckpointInfo, OutputFile
from ..checkpoints import Saved, kept
from ._sqlbase import SQLBase

__all__ = ["CheckpointSQL"]

# The saving attempt's lease must be live (the task's, or its backup's): its attempt number.
_LIVE = (
    "SELECT t.attempts FROM tasks t WHERE t.id = ? AND t.status = 'running'"
    " AND ((t.lease_id = ? AND t.lease_expires > ?) OR EXISTS (SELECT 1 FROM backups b"
    " WHERE b.task_id = t.id AND b.lease_id = ? AND b.lease_expires > ?))"
)
# The next number in the same statement; two saves racing for one number (a task and its
# backup attempt, at once) insert one row, and the other save is refused, not failed.
_INSERT = (
    "INSERT INTO checkpoints (task_id, n, attempt, created, size, files)"
    " SELECT ?, COALESCE(MAX(n), 0) + 1, ?, ?, ?, ? FROM checkpoints WHERE task_id = ?"
    " ON CONFLICT (task_id, n) DO NOTHING RETURNING n"
)
_OF_TASK = "SELECT n, bad FROM checkpoints WHERE task_id = ?"
_DROP = "DELETE FROM checkpoints WHERE task_id = ? AND n = ?"
_LIST = (
    "SELECT task_id, n, attempt, created, size, files, bad FROM checkpoints"
    " WHERE task_id {ids} ORDER BY task_id, n"
)
_MARK = "UPDATE checkpoints SET bad = 1 WHERE task_id = ? AND n = ?"

_files = msgspec.json.Decoder(dict[str, OutputFile])


class CheckpointSQL(SQLBase):
    """A part of SQLStore."""

    def save_checkpoint(
        self, task_id: str, lease_id: str, files: dict[str, OutputFile], now: float
    ) -> int | None:
        """Record a checkpoint of a running task, fenced by `lease_id`; its number, or None
        when the lease is not live (or another save took the number)."""
        size = sum(f.size for f in files.values())
        with self._tx():
            db, q = self._db, self._q
            row = db.execute(q(_LIVE), (task_id, lease_id, now, lease_id, now)).fetchone()
            if row is None:
                return None
            encoded = msgspec.json.encode(files)
            got = db.execute(q(_INSERT), (task_id, row[0], now, size, encoded, task_id)).fetchone()
            if got is None:
                return None
            saved = [Saved(n, bool(bad)) for n, bad in db.execute(q(_OF_TASK), (task_id,))]
            keep = kept(saved)
            self._many(_DROP, [(task_id, s.n) for s in saved if s.n not in keep])
            return int(got[0])

    def checkpoints(self, task_ids: Sequence[str]) -> dict[str, list[CheckpointInfo]]:
        """The saved checkpoints of these tasks, oldest first (tasks with none are left out)."""
        out: dict[str, list[CheckpointInfo]] = {}
        for task_id, n, attempt, created, size, files, bad in self._run_listed(
            _LIST, list(task_ids)
        ):
            info = CheckpointInfo(n, attempt, created, size, len(_files.decode(files)), bool(bad))
            out.setdefault(task_id, []).append(info)
        return out

    def checkpoint_files(self, task_id: str, n: int) -> Checkpoint | None:
        """One checkpoint's files, to restore; None when it is gone."""
        row = self._db.execute(
            self._q("SELECT files FROM checkpoints WHERE task_id = ? AND n = ?"), (task_id, n)
        ).fetchone()
        return Checkpoint(n, _files.decode(row[0])) if row else None

    def discredit_checkpoint(self, task_id: str, n: int) -> None:
        """Mark a checkpoint bad: an attempt failed straight after restoring it."""
        self._db.execute(self._q(_MARK), (task_id, n))
