"""Tasks that fork tasks: `corral.current()`, a Client scoped to the running task's job.

The worker gives every task CORRAL_URL (its coordinator), CORRAL_TOKEN (minted for this lease:
it may read and add to this one job, while the lease lasts), CORRAL_JOB_ID and CORRAL_TASK_ID.
`current()` builds a Client from them whose submissions are added to the task's own job
(POST /jobs/{id}/tasks), so children are listed, waited for, killed and fetched with it.
Shell tasks do the same with `corral submit --job "$CORRAL_JOB_ID" -- ...`.

No deadlock, even with one slot
-------------------------------
A parent that waits on its children holds its slot; on a farm of one slot the children would
never run. So a task says when it waits: while a child future's `result()` or `exception()`
blocks, or inside `with current().blocked():` (which `wait` and `gather` use), the task is
marked blocked with POST /tasks/{id}/blocked. The coordinator keeps the flag on the running
task, stops counting its slots as used, and answers the worker's held heartbeat at once with
the worker's blocked tasks; the worker counts their slots as free and leases more work into
them. The parent keeps its process (and memory) while it sleeps, so the only oversubscription
is by sleeping processes. When the wait ends the flag is cleared; children already running
finish, so for a moment a worker may run more than its slots. Nested waits are counted and
only the outermost sends anything. Recursion depth bounds how many processes sleep at once.

Rejected: running children inside the parent's slot makes every parent a scheduler (and shell
tasks could not do it); giving the lease back would lose the parent's process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from ._async import AsyncClient
from ._client import Client
from ._errors import CorralError
from ._futures import TaskFuture
from ._submission import Submission

__all__ = ["JobClient", "current"]

log = logging.getLogger("corral.client")
_ENV = ("CORRAL_URL", "CORRAL_JOB_ID", "CORRAL_TASK_ID")
# one client per task process: every current() call shares its connection and its futures
_CURRENT: dict[tuple[str, str, str], JobClient] = {}
_CURRENT_LOCK = threading.Lock()


class JobClient(Client):
    """A Client inside a running task: what it submits joins the task's own job."""

    def __init__(
        self, url: str, token: str | None, job_id: str, task_id: str, timeout: float = 30.0
    ) -> None:
        super().__init__(url, token, timeout)
        self.job_id = job_id
        self.task_id = task_id
        self._depth = 0
        self._lock = threading.Lock()

    def _enqueue(self, subs: list[Submission]) -> None:
        for sub in subs:
            for future in sub.futures:
                if isinstance(future, TaskFuture):
                    future.blocker = self.blocked
        super()._enqueue(subs)

    def _twin(self) -> AsyncClient:
        client = super()._twin()
        client.job_scope = self.job_id  # its futures' tasks join this task's job
        return client

    @contextlib.contextmanager
    def blocked(self) -> Iterator[None]:
        """While inside, this task counts as waiting on its children: its slots may be used."""
        self._mark(+1)
        try:
            yield
        finally:
            self._mark(-1)

    def _mark(self, step: int) -> None:
        with self._lock:  # held while telling, so the coordinator sees the calls in order
            self._depth += step
            if (step > 0 and self._depth == 1) or (step < 0 and self._depth == 0):
                try:
                    self.set_blocked(self.task_id, step > 0)
                except CorralError as exc:  # not fatal: only the farm's slack is lost
                    log.warning("cannot tell the coordinator task %s waits: %s", self.task_id, exc)

    def wait(
        self,
        futures: Iterable[Any],
        timeout: float | None = None,
        return_when: str = concurrent.futures.ALL_COMPLETED,
    ) -> Any:
        """`concurrent.futures.wait`, marked blocked while it waits."""
        with self.blocked():
            return concurrent.futures.wait(list(futures), timeout, return_when)

    def gather(self, futures: Iterable[Any]) -> list[Any]:
        """Every future's result, in order (the first exception is raised)."""
        futures = list(futures)
        with self.blocked():
            return [f.result() for f in futures]


def current() -> JobClient:
    """A client scoped to the running task's job; only inside a corral task."""
    missing = [name for name in _ENV if not os.environ.get(name)]
    if missing:
        raise CorralError(
            "corral.current() works only inside a running corral task"
            f" ({', '.join(missing)} not set)"
        )
    key = (os.environ["CORRAL_URL"], os.environ["CORRAL_JOB_ID"], os.environ["CORRAL_TASK_ID"])
    with _CURRENT_LOCK:
        found = _CURRENT.get(key)
        if found is None:
            found = JobClient(key[0], os.environ.get("CORRAL_TOKEN"), key[1], key[2])
            _CURRENT[key] = found
        return found
