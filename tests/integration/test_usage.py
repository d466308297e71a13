"""Live figures and failures that say why, through real processes (issue 15): a running task's
memory in `corral ps JOB` within two heartbeats; `corral show` of a job's past usage;
output_size failures with their sizes in `corral wait`; no stale_lease warnings."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest

from corral.protocol import LiveUsage, TaskSpec

from .conftest import PYTHON, Farm, wait_for

MB = 1 << 20
HOLD = f"""
import sys, time
block = bytearray({200 * MB})
for i in range(0, len(block), 4096):
    block[i] = 1  # touched: resident, not just reserved
print("holding", flush=True)
time.sleep(15)
"""
SPIN = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass\n"


@pytest.mark.timeout(60)
def test_a_running_task_shows_its_memory_and_cpu_in_ps(farm: Callable[..., Farm]) -> None:
    f = farm(workers=1, slots=2, lease_timeout=3.0)  # heartbeats every 0.75 s
    interval = 0.75
    client = f.client()
    job = client.submit_job([TaskSpec(argv=[PYTHON, "-c", HOLD], name="hold")])
    (task,) = client.tasks(job.id)
    wait_for(lambda: client.task(task.id).status == "running", 20, 0.02, "the task to start")
    # the allocation itself takes a moment: from when it is done (a 200 MB bytearray, touched)
    wait_for(lambda: b"holding" in client.log(task.id)[0], 10, 0.02, "the allocation")
    allocated = time.monotonic()

    def shown() -> LiveUsage | None:
        (row,) = client.tasks(job.id)  # what `ps JOB` reads
        return row.live if row.live and row.live.memory >= 190 * MB else None

    live = wait_for(shown, 10, 0.02, "the API to show the task's memory")
    assert time.monotonic() - allocated <= 2 * interval + 0.25  # within two heartbeats
    assert 190 * MB <= live.memory <= 260 * MB and live.peak_memory >= live.memory
    rc, out, err = f.cli("ps", job.id[:8], "--json")
    assert rc == 0, err
    assert json.loads(out)[0]["live"]["memory"] >= 190 * MB
    rc, out, err = f.cli("ps", job.id[:8], timeout=10)
    assert rc == 0, err
    (line,) = [x for x in out.splitlines() if x.startswith(task.id[:12])]
    assert re.search(r"\b\d+%\s+2\d\d MB\s+2\d\d MB\b", line), out  # cpu, mem now, peak
    rc, out, err = f.cli("show", task.id[:8])
    assert rc == 0 and re.search(r"memory_now\s+2\d\d MB \(peak 2\d\d MB\)", out), out
    client.kill(task.id)


@pytest.mark.timeout(60)
def test_output_size_failure_says_the_sizes_and_show_sums_up_a_job(
    farm: Callable[..., Farm],
) -> None:
    f = farm(workers=1, slots=2, verbose=False)  # warnings only, as `corral up` runs them
    client = f.client()
    write = "for n, m in (('big.bin', 3), ('small.txt', 1)): open(n, 'wb').write(b'x' * (m << 20))"
    job = client.submit_job(
        [
            TaskSpec(argv=[PYTHON, "-c", write], limits={"output_size": 2 * MB}, max_attempts=1),
            TaskSpec(argv=[PYTHON, "-c", SPIN], name="spin"),
        ]
    )
    big, spin = client.tasks(job.id)
    rc, out, err = f.cli("wait", job.id[:8], timeout=45)
    assert rc == 1, err
    assert (
        f"{big.id[:12]} failed: limit_exceeded: output_size (4.0 MB in 2 files of 2.0 MB;"
        " largest: big.bin 3.0 MB, small.txt 1.0 MB)"
    ) in out.splitlines(), out
    rc, out, err = f.cli("why", big.id[:8])
    assert "big.bin 3.0 MB" in out, out
    rc, out, err = f.cli("show", job.id[:8])
    assert rc == 0, err
    fields = {k: v for k, _, v in (line.partition("  ") for line in out.splitlines())}
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    finished = client.task(spin.id)
    if finished.cpu_seconds is not None:  # measured where the worker has cgroups
        assert fields["cpu_seconds"].startswith("median ") and "max " in fields["cpu_seconds"]
        assert finished.cpu_seconds >= 0.3  # (the machine is shared: not all of 1.5 s)
    assert fields["peak_memory"].endswith("(2 finished tasks)"), out
    for worker in f.workers:
        assert "stale_lease" not in worker.stderr()  # no result was refused: no warning
