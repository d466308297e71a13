"""CPU milliseconds per task, by process, around a benchmark run (issue 18's table).

From psutil CPU times at the start and the end of the run, children included:
- coordinator: the `corral server` process and whatever it reaped;
- workers: the `corral worker` processes themselves (their own user + system time);
- runners: everything below the workers (bwrap, the per-slot runners, the task processes):
  each live descendant's own and reaped children's time, plus what the workers reaped;
- client: this process (the benchmark's client side runs here).

Each is divided by the tasks finished, and held against the budget of issue 18; the
runner's budget adds the program's own fork+exec where there is one (measured here, as a
Python process starting `/bin/true` with subprocess.run).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import psutil

# ms a task (issue 18): the budget that reaches 2x Dask on 2 cores
BUDGET = {"worker": 0.5, "runner": 0.3, "coordinator": 0.3, "client": 0.1}
MACHINE_BUDGET = {"command": 2.0, "function": 1.6}
PROCESSES = ("worker", "runner", "coordinator", "client")


def _own(t: Any) -> float:
    return float(t.user + t.system)


def _all(t: Any) -> float:
    return float(t.user + t.system + t.children_user + t.children_system)


def _sample(pids: list[int]) -> dict[int, tuple[float, float]]:
    """Each pid's (own, reaped children's) CPU seconds; gone pids are left out."""
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[pid] = (_own(t), _all(t) - _own(t))
    return out


def _descendants(pids: list[int]) -> dict[int, float]:
    """Every live descendant of `pids`: its CPU seconds, reaped children included."""
    out = {}
    for pid in pids:
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            continue
        for child in children:
            try:
                out[child.pid] = _all(child.cpu_times())
            except psutil.Error:
                continue
    return out


@dataclass
class CpuMeter:
    """`meter = CpuMeter(coordinator_pid, worker_pids).start()`, the run, `meter.stop(n)`."""

    coordinator: int
    workers: list[int]
    _start: dict[str, Any] = field(default_factory=dict)

    def _take(self) -> dict[str, Any]:
        me = psutil.Process().cpu_times()
        coord = _sample([self.coordinator]).get(self.coordinator, (0.0, 0.0))
        return {
            "coordinator": sum(coord),
            "workers": _sample(self.workers),
            "below": _descendants(self.workers),
            "client": _own(me),
        }

    def start(self) -> CpuMeter:
        """Take the first sample."""
        self._start = self._take()
        return self

    def stop(self, tasks: int) -> dict[str, float]:
        """CPU ms a task of each process since `start`, and their sum ("all")."""
        a, b = self._start, self._take()
        workers = sum(own for own, _ in b["workers"].values())
        workers -= sum(own for own, _ in a["workers"].values())
        # what the workers reaped in the run, and what their live descendants used in it; a
        # descendant that ended in the run counts in full in the former, so take its start
        reaped = sum(ch for _, ch in b["workers"].values())
        reaped -= sum(ch for _, ch in a["workers"].values())
        below = reaped + sum(b["below"].values()) - sum(a["below"].values())
        seconds = {
            "worker": workers,
            "runner": below,
            "coordinator": b["coordinator"] - a["coordinator"],
            "client": b["client"] - a["client"],
        }
        per = {k: 1000 * v / max(tasks, 1) for k, v in seconds.items()}
        per["all"] = sum(per.values())
        return per


def fork_exec_ms(n: int = 300) -> float:
    """CPU ms for a Python process to start `/bin/true` and reap it (children included)."""
    code = (
        "import os, subprocess\n"
        "def cpu():\n"
        "    t = os.times()\n"
        "    return t.user + t.system + t.children_user + t.children_system\n"
        "a = cpu()\n"
        f"for _ in range({n}): subprocess.run(['/bin/true'])\n"
        "print(cpu() - a)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return 1000 * float(out.stdout) / n


def budget(kind: str, fork_exec: float = 0.0) -> dict[str, float]:
    """The budget a task of this kind ("command" or "function"), by process, and "all"."""
    out = dict(BUDGET)
    out["runner"] += fork_exec
    out["all"] = MACHINE_BUDGET[kind]
    return out


def over(per: dict[str, float], limits: dict[str, float]) -> list[str]:
    """The processes (and "all") over their budget."""
    return [k for k in (*PROCESSES, "all") if per.get(k, 0.0) > limits[k]]
