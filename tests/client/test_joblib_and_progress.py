"""The joblib backend and the CLI's live progress bar, on a real farm."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import cloudpickle
import pytest

from corral import register_joblib
from corral.cli._watch import Tally
from corral.client import Client
from corral.protocol import Event, TaskSpec

from .conftest import Farm

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(90)


def square(x: int) -> int:
    return x * x


@pytest.mark.timeout(120)  # a hundred calls in farm-sized batches, on a loaded machine too
def test_joblib_parallel_runs_on_the_farm(wide_farm: Farm) -> None:
    joblib = pytest.importorskip("joblib")
    client = wide_farm.client()
    register_joblib(client)
    with joblib.parallel_config(backend="corral"):
        results = joblib.Parallel(n_jobs=4)(joblib.delayed(square)(i) for i in range(100))
    assert results == [i * i for i in range(100)]
    ran = [t for j in client.jobs() for t in client.tasks(j.id) if "pyrunner" in " ".join(t.argv)]
    assert ran, "the batches ran as function tasks on the farm"


def _event(task: str, status: str, seq: int) -> Event:
    return Event(seq, "j", task, status, None, 0.0)  # type: ignore[arg-type]


def test_tally_counts_each_task_once_and_failures_apart() -> None:
    tally = Tally(3)
    assert not tally.feed(_event("a", "running", 1))
    assert tally.feed(_event("a", "succeeded", 2)) and not tally.feed(_event("a", "succeeded", 3))
    assert tally.feed(_event("b", "failed", 4)) and tally.feed(_event("c", "killed", 5))
    assert (tally.done, tally.failures, tally.total) == (3, 2, 3)


def _read_pty(proc: subprocess.Popen[bytes], fd: int, timeout: float) -> bytes:
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the other end closed
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    return out


def test_wait_shows_a_progress_bar_on_a_terminal_and_plain_lines_otherwise(
    wide_farm: Farm,
) -> None:
    client = Client(wide_farm.url, wide_farm.token)
    try:
        specs = [TaskSpec(argv=["sleep", "0.2"]) for _ in range(3)] + [TaskSpec(argv=["false"])]
        job = client.submit_job(specs)
        env = {**wide_farm.env, "CORRAL_URL": wide_farm.url, "CORRAL_TOKEN": wide_farm.token}
        env["COLUMNS"] = "160"
        main, child = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "wait", job.id],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=child,
            stderr=subprocess.PIPE,
        )
        os.close(child)
        try:
            shown = _read_pty(proc, main, 30).decode(errors="replace")
            assert proc.wait(10) == 1
        finally:
            os.close(main)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()
        assert "4/4" in shown and "1 failed" in shown and "tasks/s" in shown
        assert f"job {job.id[:12]} failed" in shown
        rc, out, _ = wide_farm.cli("wait", job.id)
        lines = out.splitlines()
        assert rc == 1 and len(lines) == 5 and lines[-1].startswith(f"job {job.id[:12]} failed")
        assert "━" not in out and "tasks/s" not in out
    finally:
        client.close()
