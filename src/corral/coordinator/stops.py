"""Stopping work and starting it again: kill, drain, evictions, tasks given back, retries.

What each operator action does to a running task (the worker's side is worker/eviction.py):

    kill                  killed now; its worker SIGKILLs it at its next heartbeat
    kill --checkpoint     evicted, then killed: its worker SIGTERMs it, waits its grace
                          period, saves what its checkpoint directory holds and gives it back;
                          the give-back ends it killed, with its checkpoints kept
    drain                 its worker takes no new tasks and lets this one finish (issue 16)
    drain --evict         evicted, then requeued: as above, but the give-back requeues it, not
                          counting the attempt, and it resumes elsewhere from that checkpoint
    retry (killed=True)   a killed task is queued again, and starts from its last good
                          checkpoint (coordinator/checkpoints.py), as a failed one does

A queued task is not evicted (it holds no checkpoint to save): `kill --checkpoint` kills it at
once. The eviction is a row in the store (store/_evictions.py) that the task's worker learns
of through its heartbeat, whichever coordinator holds that heartbeat. A worker lost during the
grace period leaves the eviction to lease expiry: a kill still ends killed (leases.py), a
drain's task is requeued as any lost worker's.

Rejected: `kill --checkpoint` requeueing the task as HTCondor's condor_vacate does. A kill
means "stop spending the farm on this": requeueing would start it again at once, elsewhere,
which `drain --evict` already does for a machine that must be emptied. Kill, keep the
checkpoint, and let `retry --killed` say when it resumes.
"""

from __future__ import annotations

from collections.abc import Callable

from ..protocol import ReleaseReason, Task
from .errors import ApiError
from .store import Stopped, Store
from .wakeups import Wakeups

__all__ = ["Stops", "released_error"]

_RELEASED = {
    "busy": "the machine was busy",
    "owner": "the desktop's owner came back; checkpoint saved",
    "shutdown": "the worker shut down; checkpoint saved",
    "evicted": "evicted; checkpoint saved",
}


def released_error(reason: ReleaseReason) -> str:
    """What a task given back by its worker says of its last attempt (`corral show`)."""
    return f"given back by its worker ({_RELEASED[reason]}); requeued"


class Stops:
    """Kill, drain, evict, give back and retry, between the API, the store and the workers."""

    def __init__(self, store: Store, wakeups: Wakeups, clock: Callable[[], float]) -> None:
        self.store = store
        self.wakeups = wakeups
        self.clock = clock

    def kill(self, task_ids: list[str], checkpoint: bool = False) -> None:
        """Kill tasks; running ones are stopped by their worker at its next heartbeat. With
        `checkpoint`, running ones are evicted first and end killed once given back."""
        now = self.clock()
        with self.store.atomic():  # a task leased meanwhile is evicted or killed, not missed
            evicted = self.store.evict(task_ids, True, now) if checkpoint else []
            asked = {s.task_id for s in evicted}
            stopped = self.store.kill([t for t in task_ids if t not in asked], now)
        self._tell(evicted + stopped)
        self.wakeups.events.fire()

    def drain(self, worker_id: str, evict: bool = False) -> None:
        """Ask a worker to take no new tasks and leave once its running ones are done:
        finished, or with `evict` evicted and requeued."""
        evicted: list[Stopped] = []
        if self.store.get_worker(worker_id).status not in ("lost", "gone"):
            with self.store.atomic():
                self.store.set_worker_status(worker_id, "draining")
                if evict:
                    evicted = self.store.evict_worker(worker_id, self.clock())
        self._tell(evicted)
        self.wakeups.wake_worker(worker_id)
        self.wakeups.work.fire()  # its held lease request returns empty at once

    def release(self, task_id: str, lease_id: str, reason: ReleaseReason) -> Task:
        """A worker gave a task back: requeued, not counting the attempt, or killed when a
        kill asked for the eviction; 409 if the lease is stale."""
        if not self.store.release(task_id, lease_id, self.clock(), released_error(reason)):
            status = self.store.get_task(task_id).status
            raise ApiError(
                "stale_lease", f"lease {lease_id} no longer holds task {task_id} (status {status})"
            )
        self.wakeups.work.fire()
        self.wakeups.events.fire()
        return self.store.get_task(task_id)

    def retry(self, job_id: str, killed: bool = False) -> list[str]:
        """Requeue a job's failed tasks (and killed ones, with `killed`) as new attempts;
        their ids (the API's and the dashboard's `Retry failed`)."""
        ids = self.store.requeue_failed(job_id, self.clock(), killed)
        if ids:
            self.wakeups.work.fire()
            self.wakeups.events.fire()
        return ids

    def _tell(self, stopped: list[Stopped]) -> None:
        for worker_id in {s.worker_id for s in stopped}:
            self.wakeups.wake_worker(worker_id)
