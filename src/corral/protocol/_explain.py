"""Where a task stands, in plain words: what `corral why` prints and the dashboard shows."""

from __future__ import annotations

from ._models import Task

__all__ = ["explain"]


def explain(task: Task) -> str:
    """Plain words on where a task stands (a queued one's `pending_reason`, when it has one)."""
    if task.status == "queued":
        return task.pending_reason or "queued"
    attempt = f"attempt {task.attempts} of {task.max_attempts}"
    if task.status == "running":
        return f"running on worker {task.worker_id} ({attempt})"
    if task.status == "failed":
        return f"failed ({attempt}): {task.error or f'exit code {task.exit_code}'}"
    return f"{task.status} ({attempt})"
