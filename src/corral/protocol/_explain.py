"""Plain words on wire models, shared by the CLI and the dashboard: where a task stands (what
`corral why` prints) and a worker's cache counters (a column of `corral workers`)."""

from __future__ import annotations

from typing import Any

from ._models import Task
from ._sizes import format_size

__all__ = ["cache_summary", "explain"]


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


def cache_summary(caps: dict[str, Any]) -> str:
    """A worker's cache counters for `corral workers`."""
    cache = caps.get("cache")
    if not isinstance(cache, dict):
        return ""
    held = format_size(cache.get("bytes_held") or 0)
    limit = cache.get("max_bytes")
    size = f"{held}/{format_size(limit)}" if limit else held
    fetched = format_size(cache.get("bytes_fetched") or 0)
    return f"{cache.get('hits', 0)} hit {cache.get('misses', 0)} miss {fetched} in; {size}"
