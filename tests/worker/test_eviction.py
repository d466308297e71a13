"""Eviction on the worker (eviction.py): what a signal means (pure), and a task's process
tree getting SIGTERM, its grace period, then SIGKILL (executor.py, real processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.worker.config import WorkerConfig
from corral.worker.eviction import DEFAULT_GRACE, on_signal
from corral.worker.executor import Finished, TaskProcess


def test_sigterm_evicts_at_once_and_sigint_drains_first() -> None:
    assert on_signal(signal.SIGTERM, draining=False) == "evict"
    assert on_signal(signal.SIGTERM, draining=True) == "evict"
    assert on_signal(signal.SIGINT, draining=False) == "drain"
    assert on_signal(signal.SIGINT, draining=True) == "evict"  # a second Ctrl-C


def test_the_default_grace_fits_inside_what_init_systems_wait_before_sigkill() -> None:
    assert WorkerConfig("http://127.0.0.1:1").checkpoint_grace == DEFAULT_GRACE == 10.0
    assert DEFAULT_GRACE < 30.0  # Kubernetes' default, with room left for the upload


# TaskProcess.terminate over real (unsandboxed) processes: SIGTERM, grace, SIGKILL
TRAPS = (
    'trap "echo term > state; exit 143" TERM; echo started > state; while :; do sleep 0.05; done'
)
IGNORES = "trap '' TERM; echo started > state; while :; do sleep 0.05; done"


async def _evict(tmp_path: Path, script: str, grace: float, stop: bool = False) -> Result:
    task = TaskProcess()
    argv = ["sh", "-c", script]
    out, err = tmp_path / "out", tmp_path / "err"
    running = asyncio.create_task(task.run(argv, tmp_path, dict(os.environ), out, err, None))
    while not (tmp_path / "state").exists():
        await asyncio.sleep(0.01)
    if stop:  # desktop mode had stopped it: it must be resumed to see the SIGTERM
        task.suspend()
    start = time.monotonic()
    ended = await task.terminate(grace)
    took = time.monotonic() - start
    finished = await asyncio.wait_for(running, 5)
    return Result(ended, took, finished, (tmp_path / "state").read_text().strip(), task)


@dataclass
class Result:
    ended: bool  # within the grace
    took: float
    finished: Finished
    state: str  # what the task left behind
    task: TaskProcess


@pytest.mark.parametrize("stop", [False, True], ids=["running", "suspended"])
def test_a_task_trapping_sigterm_ends_within_the_grace(tmp_path: Path, stop: bool) -> None:
    r = asyncio.run(_evict(tmp_path, TRAPS, grace=10.0, stop=stop))
    assert (r.ended, r.state, r.finished.exit_code) == (True, "term", 143)
    assert r.took < 5.0 and r.task.evicted


def test_a_task_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    r = asyncio.run(_evict(tmp_path, IGNORES, grace=0.5))
    assert (r.ended, r.state, r.finished.error) == (False, "started", "killed")
    assert 0.5 <= r.took < 5.0 and r.task.evicted


def test_a_task_evicted_before_it_starts_never_starts(tmp_path: Path) -> None:
    async def go() -> tuple[bool, Finished]:
        task = TaskProcess()
        ended = await task.terminate(10.0)
        argv = ["sh", "-c", "echo ran > state"]
        out, err = tmp_path / "out", tmp_path / "err"
        return ended, await task.run(argv, tmp_path, dict(os.environ), out, err, None)

    ended, finished = asyncio.run(go())
    assert ended and finished == Finished(None, "killed") and not (tmp_path / "state").exists()
