"""Live figures of running tasks: with every heartbeat the worker samples each running task's
process tree (psutil) and sends CPU% since the last sample, resident memory now, the most any
sample saw, and CPU seconds so far (protocol LiveUsage). `advance` is the decision, pure;
`tree_totals` reads /proc.

The tree is the task's process and every descendant (under bubblewrap, bwrap's own two small
processes too); a pooled function runner's tree counts the runner, which serves calls one at
a time. Memory is the sum of resident sets, so pages shared between forked processes count
more than once: a sample reads high rather than low. What a finished task used is measured
apart, by its cgroup where it has one (limits.Usage), and kept with its result.

Rejected: the cgroup's own counters for live figures. Only tasks with a cgroup have them (not
a worker without delegated cgroups, nor a pooled runner's calls); psutil sees every task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import psutil

from ..protocol import LiveUsage, TaskSample
from ._attempt import TaskRun
from .state import Held

__all__ = ["Sampler", "Track", "advance", "tree_totals"]


@dataclass(frozen=True)
class Track:
    """What the last sample of one attempt saw: when (monotonic), its CPU seconds, its peak."""

    at: float
    cpu: float
    peak: int


def advance(
    prev: Track | None, now: float, cpu: float, rss: int, age: float
) -> tuple[Track, LiveUsage]:
    """The next sample of an attempt whose tree has used `cpu` seconds and holds `rss` bytes,
    `age` seconds after its process started: CPU% over the time since the last sample (over
    its whole life for the first one)."""
    if prev is None:
        span, used, peak = age, cpu, rss
    else:
        span, used, peak = now - prev.at, cpu - prev.cpu, max(prev.peak, rss)
    percent = max(used, 0.0) / span * 100 if span > 0 else 0.0  # a process that left: not < 0
    usage = LiveUsage(round(percent, 1), rss, peak, round(max(cpu, 0.0), 3))
    return Track(now, cpu, peak), usage


def tree_totals(pid: int) -> tuple[float, int, float] | None:
    """CPU seconds and resident bytes of a process and all its descendants, and the seconds
    since it started; None when it is gone."""
    try:
        root = psutil.Process(pid)
        age = time.time() - root.create_time()
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    cpu, rss = 0.0, 0
    for proc in procs:
        try:
            with proc.oneshot():
                times, memory = proc.cpu_times(), proc.memory_info()
        except psutil.Error:  # it ended meanwhile
            continue
        cpu += times.user + times.system + times.children_user + times.children_system
        rss += memory.rss
    return cpu, rss, age


class Sampler:
    """The tracks of the attempts running now, by lease id."""

    def __init__(
        self,
        read: Callable[[int], tuple[float, int, float] | None] = tree_totals,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._clock = clock
        self._tracks: dict[str, Track] = {}

    def sample(self, presented: Iterable[Held], runs: Mapping[str, TaskRun]) -> list[TaskSample]:
        """A sample of every presented task whose process runs; forgets the others."""
        out: list[TaskSample] = []
        tracks: dict[str, Track] = {}
        for held in presented:
            a = held.assignment
            run = runs.get(a.task_id)
            proc = run.process.proc if run is not None else None
            if proc is None or proc.returncode is not None:
                continue
            found = self._read(proc.pid)
            if found is None:
                continue
            track, usage = advance(self._tracks.get(a.lease_id), self._clock(), *found)
            tracks[a.lease_id] = track
            out.append(TaskSample(a.task_id, a.lease_id, usage))
        self._tracks = tracks
        return out
