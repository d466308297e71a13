"""Desktop mode's I/O pieces: the process snapshot, and stopping a task process tree
without its stopped time counting against its wall-time limit."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import psutil

from corral.worker.desktop import take_snapshot
from corral.worker.executor import Finished, TaskProcess
from corral.worker.idle import our_processes

# a leader that sleeps 1.5 s in a child of its own, so the whole tree must stop
SLEEPER = "import subprocess, sys; sys.exit(subprocess.call(['sleep', '1.5']))"


def test_snapshot_sees_this_process_and_its_children(tmp_path: Path) -> None:
    snap = take_snapshot()
    mine = [k for k in snap.procs if k[0] == os.getpid()]
    assert len(mine) == 1
    assert snap.procs[mine[0]].own > 0
    assert mine[0] in our_processes(snap, os.getpid(), [])


async def _run(tmp_path: Path, wall: float, stop_for: float) -> tuple[Finished, float, str]:
    task = TaskProcess()
    argv = [sys.executable, "-c", SLEEPER]
    out, err = tmp_path / "out", tmp_path / "err"
    running = asyncio.create_task(task.run(argv, tmp_path, dict(os.environ), out, err, wall))
    status = ""
    if stop_for:
        while task.proc is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        task.suspend()
        await asyncio.sleep(0.3)
        kids = psutil.Process(task.proc.pid).children(recursive=True)
        status = ",".join(sorted({p.status() for p in [psutil.Process(task.proc.pid), *kids]}))
        await asyncio.sleep(stop_for - 0.3)
        task.resume()
    finished = await asyncio.wait_for(running, 20)
    return finished, task.suspended_for(), status


def test_suspended_time_does_not_count_against_wall_time(tmp_path: Path) -> None:
    finished, stopped, status = asyncio.run(_run(tmp_path, wall=2.5, stop_for=2.0))
    assert status == psutil.STATUS_STOPPED  # the leader and its child alike
    assert finished == Finished(0, None)  # ran 1.5 s, took 3.5 s: within its 2.5 s
    assert stopped >= 2.0


def test_wall_time_still_applies_to_running_time(tmp_path: Path) -> None:
    finished, _, _ = asyncio.run(_run(tmp_path, wall=0.8, stop_for=0))
    assert finished.error == "limit_exceeded: wall_time"
