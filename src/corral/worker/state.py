"""What a worker holds and what follows from it: the worker's state, kept pure.

No asyncio, no I/O, and no clock read here: the agent (agent.py) tells `WorkerState` what
happened, with the time when it matters, and asks it what to do. Tested on its own in
tests/worker/test_state.py, as dask/distributed tests its worker state machine.

The life of a task inside the worker:

                  granted              try_start: it fits
    lease grant ──────────> waiting ───────────────────────> executing ──────────────┐
                          (prefetched)                        │      ^                │
                             │                        blocked │      │ unblocked      │
                             │                                v      │                │
                             │                       blocked: waits on its children,  │
                             │                       its slots lent to other tasks    │
                             │                                                        │
                             ├─ released: drain, eviction, or no slot within          │
                             │            GIVE_BACK seconds                           │
                             └─ cancelled: killed, or its lease went stale            │
                                   │  (an executing task too: killed by the           v
                                   │   coordinator)                 evicting: SIGTERM, grace,
                                   │                                checkpoint (eviction.py)
                                   │                                  │               │
                                   │                   released: the eviction ended   │
                                   │                   its process: given back        │
                                   v                                  v               v
                             finished: it leaves the worker (its asyncio task ended)

A cancelled or released task is no longer presented: its lease is not extended nor its result
reported, and a released one is handed back to the queue. An evicting task is still
presented (its lease must stay live for its checkpoint to be recorded) until its process has
ended; a result it reaches on its own first still counts. Every accepted task is held until
`finished`, whatever became of it: until then its slots count and the inline blobs it came
with are kept.

Slots are counted two ways, on purpose, both here:
- `held_slots`: every held task that is not blocked, waiting ones included. A lease call asks
  for `slots + prefetch room - held_slots` tasks (prefetch.py).
- `busy_slots`: executing tasks that are not blocked. A waiting task starts when it fits
  beside them, or when nothing executes (a task asking for more slots than the worker has
  still runs, alone).

Inline blobs (small inputs that came inside a lease) are held per accepted task and dropped
when the last task that came with them finishes, so a task finishing between another's grant
and its staging cannot take that task's inputs with it (it once cleared them all whenever the
worker looked idle, and the new task then fetched them with a stray GET /blobs).

Rejected: one dict of inline blobs, cleared whenever no task is held. It is right only while a
grant's tasks are registered before any other asyncio task runs, an ordering only a comment
in the lease loop kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ..protocol import Assignment, ReleaseReason, slots_needed
from .prefetch import GIVE_BACK, RunTimes, prefetch_room, worth_asking

__all__ = ["Ask", "Held", "STORED_MAX", "Start", "WorkerState"]

STORED_MAX = 4096  # hashes remembered as stored by the coordinator (then forgotten at once)

# what became of a waiting task asked to start: it executes now; it still waits for a slot;
# it waited GIVE_BACK seconds and is released now; it was cancelled or released before
Start = Literal["started", "waiting", "expired", "gone"]


@dataclass
class Held:
    """One task accepted from a lease, until it finishes."""

    assignment: Assignment
    granted: float  # when it was leased (monotonic seconds)
    started: float | None = None  # when it got its slots
    cancelled: bool = False  # killed, or its lease went stale: no result counts
    released: bool = False  # given back to the queue: no result, no lease
    reason: ReleaseReason = "busy"  # why it is given back, when it is
    evict_by: float | None = None  # evicting: when what remains of its process is killed

    @property
    def need(self) -> int:
        """The slots it takes (its `cpus` requirement)."""
        return slots_needed(self.assignment.spec.requires)

    @property
    def presented(self) -> bool:
        """Whether its lease is still ours to extend and report on."""
        return not (self.cancelled or self.released)


@dataclass(frozen=True)
class Ask:
    """What to ask for in a lease call."""

    max: int  # tasks: the free slots plus the prefetch room
    prefetch: int  # how many of them may wait for a slot here
    prefetch_job: str  # the job whose run times make prefetch worth it ("" when none)


class WorkerState:
    """The tasks a worker holds, their slots, inline blobs and run times: events in,
    decisions out."""

    def __init__(self, slots: int, prefetch: bool = True) -> None:
        self.slots = slots
        self.prefetch = prefetch  # never ahead of the slots in desktop mode
        self.tasks: dict[str, Held] = {}  # by task id, in the order they were granted
        self.blocked: set[str] = set()  # as the coordinator last said
        self.draining = False
        self.times = RunTimes()
        self.short_job = ""  # the job whose run times the mean now reflects
        self._inline: dict[str, bytes] = {}
        self._inline_users: dict[str, set[str]] = {}  # sha256 -> lease ids that came with it
        # blobs the coordinator has confirmed it holds (blobs are never deleted there): most
        # tasks' stdout and stderr are the same empty blob, which then costs no round trip
        self.stored: set[str] = set()

    # events
    def granted(self, a: Assignment, now: float) -> Held:
        """A task leased to this worker is accepted, with the inline blobs it came with."""
        held = Held(a, now)
        self.tasks[a.task_id] = held
        for sha, data in a.inline.items():
            self._inline.setdefault(sha, data)
            self._inline_users.setdefault(sha, set()).add(a.lease_id)
        return held

    def try_start(self, task_id: str, now: float) -> Start:
        """Start a waiting task if it fits beside the executing ones; give it back once it
        has waited `GIVE_BACK` seconds."""
        held = self.tasks[task_id]
        if not held.presented:
            return "gone"
        if held.started is None:
            if not self.fits(held.need):
                if now < held.granted + GIVE_BACK:
                    return "waiting"
                held.released = True
                return "expired"
            held.started = now
        return "started"

    def give_back_in(self, task_id: str, now: float) -> float:
        """Seconds a waiting task may still wait for a slot before it is given back."""
        return self.tasks[task_id].granted + GIVE_BACK - now

    def finished(self, a: Assignment, now: float, ran: bool) -> Held | None:
        """The task left the worker (its result, if any, is the outbox's now); `ran`: its
        process ran to the end, so its run time counts towards prefetch."""
        for sha in a.inline:
            users = self._inline_users.get(sha)
            if users is not None:
                users.discard(a.lease_id)
                if not users:  # no accepted task still may need it
                    del self._inline_users[sha], self._inline[sha]
        held = self.tasks.get(a.task_id)
        if held is None or held.assignment.lease_id != a.lease_id:
            return None  # another attempt of it came meanwhile: that one stays
        del self.tasks[a.task_id]
        if ran and held.started is not None:
            self.times.add(now - held.started)
            self.short_job = a.job_id
        return held

    def cancel(self, lease_ids: Iterable[str]) -> list[str]:
        """The coordinator killed these leases (or calls them stale): the tasks to kill."""
        wanted = set(lease_ids)
        ids = [t for t, h in self.tasks.items() if h.assignment.lease_id in wanted]
        for task_id in ids:
            self.tasks[task_id].cancelled = True
        return ids

    def evict(
        self, lease_ids: Iterable[str], reason: ReleaseReason, now: float, grace: float
    ) -> list[str]:
        """Evict these leases' tasks (eviction.py): a waiting one is released now; an
        executing one is evicting, to be killed `grace` seconds from now at the latest (an
        earlier eviction's deadline stands). The tasks whose process to SIGTERM now."""
        wanted = set(lease_ids)
        terminate = []
        for task_id, held in self.tasks.items():
            if held.assignment.lease_id not in wanted or not held.presented:
                continue
            if held.evict_by is None:
                held.reason = reason
                if held.started is None:
                    held.released = True
                    continue
                held.evict_by = now + grace
                terminate.append(task_id)
            else:
                held.evict_by = min(held.evict_by, now + grace)
        return terminate

    def evict_in(self, task_id: str, now: float) -> float:
        """Seconds an evicting task's process may still run before it is killed."""
        evict_by = self.tasks[task_id].evict_by
        return 0.0 if evict_by is None else max(evict_by - now, 0.0)

    def evicted(self, task_id: str) -> bool:
        """An evicting task's process has ended (its checkpoint saved): it goes back to the
        queue. False when it was cancelled meanwhile."""
        held = self.tasks.get(task_id)
        if held is None or held.evict_by is None or not held.presented:
            return False
        held.released = True
        return True

    def set_blocked(self, task_ids: Iterable[str]) -> bool:
        """The tasks now waiting on their children, as the coordinator says: their slots
        are lent to others; the rest are unblocked. Whether anything changed."""
        blocked = set(task_ids)
        changed = blocked != self.blocked
        self.blocked = blocked
        return changed

    def drain(self) -> list[str]:
        """Take no new tasks; the waiting ones go back to the queue (those released now)."""
        self.draining = True
        waiting = [t for t, h in self.tasks.items() if h.started is None and h.presented]
        for task_id in waiting:
            self.tasks[task_id].released = True
        return waiting

    def remember_stored(self, hashes: Iterable[str]) -> None:
        """The coordinator holds these blobs now."""
        if len(self.stored) > STORED_MAX:
            self.stored.clear()
        self.stored.update(hashes)

    # decisions
    def held_slots(self) -> int:
        """Slots of every held task not blocked: what a lease call's room is counted from."""
        return sum(h.need for t, h in self.tasks.items() if t not in self.blocked)

    def busy_slots(self) -> int:
        """Slots of the executing tasks not blocked: what a waiting task must fit beside."""
        return sum(
            h.need for t, h in self.tasks.items() if h.started is not None and t not in self.blocked
        )

    def fits(self, need: int) -> bool:
        """Whether a task taking `need` slots may start now."""
        busy = self.busy_slots()
        return busy == 0 or busy + need <= self.slots

    def waiting(self) -> int:
        """Tasks accepted and not started (prefetched, or on their way out)."""
        return sum(1 for h in self.tasks.values() if h.started is None)

    @property
    def executing(self) -> bool:
        """Whether any task has its slots (a result may then wait for company)."""
        return any(h.started is not None for h in self.tasks.values())

    def lease_ask(self, now: float) -> Ask | None:
        """What the next lease call asks for, or None: not worth a call yet (prefetch.py)."""
        if self.draining:
            return None
        ahead = prefetch_room(*self._prefetch_facts(now)) if self.prefetch else 0
        room = self.slots + ahead - self.held_slots()
        if not worth_asking(room, ahead, self.waiting()):
            return None
        return Ask(room, ahead, self.short_job if ahead else "")

    def _prefetch_facts(self, now: float) -> tuple[int, float | None, float]:
        oldest = max(
            (now - h.started for h in self.tasks.values() if h.started is not None),
            default=0.0,
        )
        return self.slots, self.times.mean, oldest

    def presented(self) -> list[Held]:
        """The tasks whose leases are ours: extended by heartbeats, their output sent."""
        return [h for h in self.tasks.values() if h.presented]

    def lent(self) -> list[Held]:
        """The presented tasks not being evicted: the ones desktop mode stops and resumes."""
        return [h for h in self.presented() if h.evict_by is None]

    def evicting(self) -> list[str]:
        """The leases of the tasks being evicted (heartbeats say which evictions are known)."""
        return [h.assignment.lease_id for h in self.presented() if h.evict_by is not None]

    def leases(self) -> list[str]:
        """The leases a heartbeat presents for the held tasks."""
        return [h.assignment.lease_id for h in self.presented()]

    def inline(self, sha256: str) -> bytes | None:
        """The content of a blob that came inside a lease, while a task may need it."""
        return self._inline.get(sha256)

    def inline_held(self) -> set[str]:
        """The inline blobs held now."""
        return set(self._inline)
