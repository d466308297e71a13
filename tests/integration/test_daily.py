"""Daily use with real processes (issue 15): a `corral server`, a worker and the CLI as
separate processes; short ids, `JOB/NAME`, and the reasons `wait` gives for failures."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from corral.protocol import TaskSpec

from .conftest import PYTHON, Farm


@pytest.mark.timeout(90)
def test_short_ids_and_wait_reasons(farm: Callable[..., Farm]) -> None:
    f = farm(workers=1, slots=2, args=("--no-sandbox",))
    client = f.client()
    fail = "import sys; print('working'); sys.exit('fatal: the input is empty')"
    specs = [
        TaskSpec(argv=["true"], name="fine"),
        TaskSpec(argv=[PYTHON, "-c", fail], name="broken", max_attempts=1),
        TaskSpec(argv=["sleep", "30"], name="slow", limits={"wall_time": 1}, max_attempts=1),
    ]
    job = client.submit_job(specs, "daily")
    fine, broken, slow = client.tasks(job.id)

    rc, out, err = f.cli("wait", job.id[:6], timeout=60)
    assert rc == 1, err
    lines = out.splitlines()
    assert f"{fine.id[:12]} succeeded" in lines
    assert f"{broken.id[:12]} failed: exit 1: fatal: the input is empty" in lines
    assert any(
        line.startswith(f"{slow.id[:12]} failed: limit_exceeded: wall_time") for line in lines
    )
    assert lines[-1].startswith(f"job {job.id[:12]} failed")

    rc, out, err = f.cli("logs", f"{job.id[:8]}/broken")
    assert rc == 0, err
    assert out.splitlines() == [
        f"==> stdout of task {broken.id[:12]} <==",
        "working",
        f"==> stderr of task {broken.id[:12]} <==",
        "fatal: the input is empty",
    ]
    rc, out, err = f.cli("wait", fine.id[:5])  # a task: only that one
    assert (rc, out.strip()) == (0, f"{fine.id[:12]} succeeded"), err
    rc, out, err = f.cli("ps", job.id[:4])
    assert rc == 0 and len(out.splitlines()) == 4 and "broken" in out, err
