"""Idle-aware desktop mode, the pure part: how busy the owner is, and what to do about it.

Two pure pieces, no processes or clocks of their own:

- `other_cpu_percent` turns two snapshots of per-process CPU times into the share of the
  machine (all cores) used by processes that are not the worker's own;
- `IdlePolicy.step` turns that load, one sample at a time, into what the worker should do.

Worker states (the status it reports)::

    idle-wait --idle for `settle` s--> online --load above threshold--> suspended
        ^                                ^                                  |
        |                                +------idle for `settle` s---------+
        +--------------busy for `grace` s: give the tasks back--------------+

While `suspended` the worker's task process groups are stopped (SIGSTOP); `online` means
they run (SIGCONT) and new tasks may start. Load at or below the threshold is idle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "Decision",
    "IdlePolicy",
    "IdleState",
    "Mode",
    "ProcSample",
    "Snapshot",
    "other_cpu_percent",
    "our_processes",
]

Mode = Literal["idle-wait", "online", "suspended"]
ProcKey = tuple[int, float]  # (pid, create time): a pid reused by a new process is new


@dataclass(frozen=True)
class ProcSample:
    """One process at one moment: its parent, session and cumulative CPU seconds."""

    ppid: int
    sid: int
    own: float  # user + system of the process itself
    children: float  # user + system of its children that it has reaped


@dataclass(frozen=True)
class Snapshot:
    """Every visible process at one moment (`time` from the same clock as create times)."""

    time: float
    procs: Mapping[ProcKey, ProcSample]


def our_processes(snap: Snapshot, worker_pid: int, task_sids: Iterable[int]) -> set[ProcKey]:
    """The worker, its descendants, and anything still in a task's session (re-parented
    daemons included): the processes whose CPU is not the owner's."""
    sids = set(task_sids)
    children: dict[int, list[int]] = defaultdict(list)
    for (pid, _), p in snap.procs.items():
        children[p.ppid].append(pid)
    tree, todo = set(), [worker_pid]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += children.get(pid, [])
    return {key for key, p in snap.procs.items() if key[0] in tree or p.sid in sids}


def other_cpu_percent(prev: Snapshot, cur: Snapshot, ours: set[ProcKey], ncpu: int) -> float:
    """Percent of the machine's CPU capacity used between two snapshots by other processes.

    A process's time counts as it grows; a parent's reaped-children time counts too (so
    short-lived processes are seen), less what its vanished children were already counted
    for, so nothing is counted twice."""
    elapsed = cur.time - prev.time
    if elapsed <= 0 or ncpu <= 0:
        return 0.0
    total = 0.0
    grown: dict[int, float] = {}  # pid -> growth of its reaped-children time
    for key, p in cur.procs.items():
        before = prev.procs.get(key)
        if before is None:
            # born since the last look: all its time is new; otherwise we just missed it
            own, kids = (p.own, p.children) if key[1] >= prev.time else (0.0, 0.0)
        else:
            own, kids = max(p.own - before.own, 0.0), max(p.children - before.children, 0.0)
        if key not in ours:
            total += own + kids
            grown[key[0]] = kids
    vanished: dict[int, float] = defaultdict(float)
    for key, p in prev.procs.items():
        if key not in cur.procs:
            vanished[p.ppid] += p.own + p.children
    for ppid, counted in vanished.items():
        total -= min(counted, grown.get(ppid, 0.0))
    return max(total, 0.0) / (elapsed * ncpu) * 100.0


@dataclass(frozen=True)
class IdleState:
    """Where the worker stands, and since when the load has been on its current side."""

    mode: Mode = "idle-wait"
    idle_since: float | None = None  # start of the current idle stretch
    suspended_since: float | None = None


@dataclass(frozen=True)
class Decision:
    """What the worker should do now: `stop` its tasks (else let them run), `give_back`
    its tasks to the queue, and whether new tasks may start."""

    stop: bool
    give_back: bool
    may_start: bool


@dataclass(frozen=True)
class IdlePolicy:
    """Thresholds: percent of all cores used by others; seconds of busy before giving tasks
    back; seconds of idle before starting or resuming."""

    threshold: float = 25.0
    grace: float = 300.0
    settle: float = 2.0

    def step(
        self, state: IdleState, now: float, load: float, has_tasks: bool
    ) -> tuple[IdleState, Decision]:
        """The next state and decision after one load sample."""
        if load <= self.threshold:
            since = state.idle_since if state.idle_since is not None else now
            state = replace(state, idle_since=since)
            if now - since >= self.settle:
                state = IdleState("online", since)
        elif state.mode != "suspended" and has_tasks:
            state = IdleState("suspended", None, now)  # the owner is back: stop at once
        elif state.mode == "online":
            state = IdleState("idle-wait")
        else:
            state = replace(state, idle_since=None)
        stopped = state.suspended_since
        if state.mode == "suspended" and not has_tasks:
            state = replace(state, mode="idle-wait", suspended_since=None)
        elif state.mode == "suspended" and stopped is not None and now - stopped >= self.grace:
            return IdleState("idle-wait", state.idle_since), Decision(True, True, False)
        online = state.mode == "online"
        return state, Decision(stop=state.mode == "suspended", give_back=False, may_start=online)
