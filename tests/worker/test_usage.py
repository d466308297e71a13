"""Live figures of running tasks (worker/usage.py): the pure step, the sampler, and a real
process tree."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

from corral.worker.usage import Sampler, Track, advance, tree_totals


def test_advance_takes_cpu_percent_since_the_last_sample_and_keeps_the_peak() -> None:
    track, first = advance(None, 100.0, cpu=2.0, rss=300, age=4.0)
    assert (first.cpu_percent, first.memory, first.peak_memory, first.cpu_seconds) == (
        50.0, 300, 300, 2.0,
    )  # fmt: skip
    track, second = advance(track, 102.0, cpu=5.0, rss=100, age=6.0)
    assert (second.cpu_percent, second.memory, second.peak_memory) == (150.0, 100, 300)
    assert track == Track(102.0, 5.0, 300)
    _, gone = advance(track, 103.0, cpu=1.0, rss=10, age=7.0)  # a child left, with its time
    assert gone.cpu_percent == 0.0


def held(task_id: str, lease_id: str) -> Any:
    return SimpleNamespace(assignment=SimpleNamespace(task_id=task_id, lease_id=lease_id))


def run(pid: int | None, returncode: int | None = None) -> Any:
    proc = None if pid is None else SimpleNamespace(pid=pid, returncode=returncode)
    return SimpleNamespace(process=SimpleNamespace(proc=proc))


def test_sampler_samples_running_processes_and_forgets_the_others() -> None:
    reads = {10: (1.0, 500, 2.0), 11: (0.0, 50, 1.0)}
    now = [50.0]
    sampler = Sampler(lambda pid: reads.get(pid), lambda: now[0])
    presented = [held("a", "la"), held("b", "lb"), held("c", "lc"), held("d", "ld")]
    runs = {"a": run(10), "b": run(11, returncode=0), "c": run(None), "d": run(12)}
    (a,) = sampler.sample(presented, runs)  # b ended, c not started, d's process is gone
    assert (a.task_id, a.lease_id, a.usage.cpu_percent, a.usage.memory) == ("a", "la", 50.0, 500)
    reads[10] = (2.0, 400, 3.0)
    now[0] = 52.0
    (a,) = sampler.sample(presented, runs)
    assert (a.usage.cpu_percent, a.usage.memory, a.usage.peak_memory) == (50.0, 400, 500)


def test_tree_totals_counts_the_children() -> None:
    code = "import subprocess, sys, time; x = bytearray(64 << 20); subprocess.run(['sleep', '5'])"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        import time

        deadline = time.monotonic() + 5
        found = None
        while time.monotonic() < deadline:
            found = tree_totals(child.pid)
            if found and found[1] > 64 << 20:
                break
            time.sleep(0.05)
        assert found is not None and found[1] > 64 << 20 and found[2] >= 0
    finally:
        child.kill()
        child.wait()
    assert tree_totals(child.pid) is None
