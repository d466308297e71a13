"""The futures a client hands out: TaskFuture (concurrent.futures) and AsyncTaskFuture (asyncio).

Both carry the `task_id` and `job_id` the coordinator gave their task, once it is submitted.
They are settled by a Dispatcher (`_dispatch.py`) through a Submission (`_submission.py`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import Any


class TaskFuture(concurrent.futures.Future[Any]):
    """A concurrent.futures.Future for a task; `task_id` and `job_id` once submitted."""

    task_id: str | None = None
    job_id: str | None = None
    # inside a task (client/_current.py): held while waiting, so the farm knows we are blocked
    blocker: Callable[[], contextlib.AbstractContextManager[None]] | None = None

    def result(self, timeout: float | None = None) -> Any:
        """The task's result, waiting up to `timeout` seconds."""
        if self.blocker is None or self.done():
            return super().result(timeout)
        with self.blocker():
            return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception (None if it succeeded), waiting up to `timeout` seconds."""
        if self.blocker is None or self.done():
            return super().exception(timeout)
        with self.blocker():
            return super().exception(timeout)

    def cancel(self) -> bool:
        """Cancel while queued; `wait` and `as_completed` count it as done at once."""
        if not super().cancel():
            return False
        # the standard executors do this when a worker picks the item up; no worker will
        with contextlib.suppress(RuntimeError):
            self.set_running_or_notify_cancel()
        return True


class AsyncTaskFuture(asyncio.Future[Any]):
    """An asyncio.Future for a task; `task_id` and `job_id` once submitted."""

    task_id: str | None = None
    job_id: str | None = None


__all__ = ["AsyncTaskFuture", "TaskFuture"]
