"""Outcome decoders: what a finished task settles its futures with.

A decoder takes the final Task and its result file (None when it left none) and returns one
`Settlement` per future of the submission: `(True, value)` or `(False, exception)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol import Task
from ._errors import CorralError
from ._functions import TaskFailed, decode_result

# what a settled future gets: (True, value) or (False, exception)
Settlement = tuple[bool, Any]
Decoder = Callable[[Task, "bytes | None"], list[Settlement]]


def command_outcome(task: Task, _: bytes | None) -> list[Settlement]:
    """A command task's future gets its Task, or TaskFailed."""
    return [(True, task)] if task.status == "succeeded" else [(False, TaskFailed(task))]


def function_outcome(task: Task, data: bytes | None) -> list[Settlement]:
    """A function task's future gets the return value, or the remote exception."""
    out = decode_result(data, task)
    return [(True, out.value)] if out.error is None else [(False, out.error)]


def chunk_outcome(size: int) -> Decoder:
    """One settlement per item of a chunk; items after a failure were never run."""

    def decode(task: Task, data: bytes | None) -> list[Settlement]:
        out = decode_result(data, task)
        if out.error is None:
            return [(True, v) for v in out.value]
        done = list(out.partial or [])
        rest = size - len(done) - 1
        skipped = CorralError(f"not run: item {len(done)} of its chunk (task {task.id}) raised")
        return [(True, v) for v in done] + [(False, out.error)] + [(False, skipped)] * rest

    return decode


__all__ = ["Decoder", "Settlement", "chunk_outcome", "command_outcome", "function_outcome"]
