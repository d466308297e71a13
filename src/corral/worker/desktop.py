"""Idle-aware desktop mode, the I/O part: sample processes, apply the idle policy.

Once a second the controller reads every visible process's CPU times (psutil), works out
the load from processes that are not the worker's own (idle.py), and makes the tasks match
the decision: stopped, running, or given back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping

import psutil

from .executor import TaskProcess
from .idle import (
    IdlePolicy,
    IdleState,
    Mode,
    ProcSample,
    Snapshot,
    other_cpu_percent,
    our_processes,
)

__all__ = ["Desktop", "take_snapshot"]

log = logging.getLogger("corral.worker")


def take_snapshot() -> Snapshot:
    """Every visible process's parent, session and CPU times, now."""
    procs = {}
    now = time.time()
    for proc in psutil.process_iter(["ppid", "cpu_times", "create_time"]):
        info = proc.info
        times = info.get("cpu_times")
        if times is None or info.get("create_time") is None:
            continue  # gone, or not ours to read
        try:
            sid = os.getsid(proc.pid)
        except OSError:
            continue
        own = times.user + times.system
        kids = times.children_user + times.children_system
        procs[(proc.pid, info["create_time"])] = ProcSample(info["ppid"] or 0, sid, own, kids)
    return Snapshot(now, procs)


Tasks = Callable[[], Mapping[str, TaskProcess]]


class Desktop:
    """Lends only idle cycles: gates new tasks, suspends, resumes and gives tasks back."""

    def __init__(self, policy: IdlePolicy, interval: float = 1.0) -> None:
        self.policy = policy
        self.interval = interval
        self.state = IdleState()
        self.may_start = False
        self.load = 0.0
        self._changed = asyncio.Event()
        self._stopped: set[str] = set()

    @property
    def status(self) -> Mode:
        """What the worker reports: online, idle-wait or suspended."""
        return self.state.mode

    async def until_idle(self, stop: asyncio.Event) -> None:
        """Return once new tasks may start, or when `stop` is set."""
        while not self.may_start and not stop.is_set():
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.interval)

    async def run(
        self,
        tasks: Tasks,
        give_back: Callable[[str], Awaitable[None]],
        on_change: Callable[[], None],
    ) -> None:
        """Sample and act until cancelled; `on_change` is called when the status changes."""
        prev = await asyncio.to_thread(take_snapshot)
        ncpu = os.cpu_count() or 1
        while True:
            await asyncio.sleep(self.interval)
            cur = await asyncio.to_thread(take_snapshot)
            running = tasks()
            sids = [p.proc.pid for p in running.values() if p.proc is not None]
            ours = our_processes(cur, os.getpid(), sids) | our_processes(prev, os.getpid(), sids)
            self.load = other_cpu_percent(prev, cur, ours, ncpu)
            prev = cur
            before = self.state.mode
            self.state, decision = self.policy.step(
                self.state, time.monotonic(), self.load, bool(running)
            )
            self.may_start = decision.may_start
            if decision.give_back:
                log.warning(
                    "machine busy past the grace period: giving %d task(s) back", len(running)
                )
                for task_id in list(running):
                    await give_back(task_id)
            else:
                self._apply(running, decision.stop)
            if self.state.mode != before:
                log.info("other processes use %.1f%% of the CPU: %s", self.load, self.state.mode)
                self._changed.set()
                on_change()

    def _apply(self, running: Mapping[str, TaskProcess], stop: bool) -> None:
        """Make every task stopped or running as decided."""
        self._stopped &= set(running)
        for task_id, process in running.items():
            if stop and task_id not in self._stopped:
                process.suspend()
                self._stopped.add(task_id)
            elif not stop and task_id in self._stopped:
                process.resume()
                self._stopped.discard(task_id)
