"""Chaos in the suite (issue 14): kill -9 a random worker every couple of seconds while a
200-task job runs, starting a replacement each time. Bounded: at most KILLS kills, and the
test under two minutes. It prints what it injected and checked (the note's numbers).
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable

import pytest

from corral.protocol import FINAL_STATUSES, TaskSpec

from .conftest import Farm

TASKS = 200
KILLS = 8
EVERY = 2.0  # seconds between kills


def expected(i: int) -> str:
    return hashlib.sha256(f"task {i}\n".encode()).hexdigest()


@pytest.mark.timeout(120)
def test_every_task_succeeds_once_while_workers_are_killed(farm: Callable[..., Farm]) -> None:
    f = farm(workers=4, slots=2, lease_timeout=3.0)
    client = f.client()
    script = 'sleep 0.5; echo "task $1" > out.txt'
    specs = [
        TaskSpec(["sh", "-c", script, "sh", str(i)], max_attempts=KILLS + 2) for i in range(TASKS)
    ]
    job = client.submit_job(specs)
    chance = random.Random(14)
    kills = 0
    started = time.monotonic()
    while kills < KILLS and client.job(job.id).status not in FINAL_STATUSES:
        time.sleep(EVERY)
        live = [w for w in f.workers if w.proc.poll() is None]
        f.kill_worker(chance.choice(live))
        kills += 1
        f.start_worker(2)  # a replacement
    done = f.wait_job(client, job.id, timeout=100 - (time.monotonic() - started))
    tasks = client.tasks(job.id)
    assert done.status == "succeeded", Counter(t.status for t in tasks)
    assert len(tasks) == TASKS
    # outputs intact: each task's file is the one it wrote
    for t in tasks:
        assert t.manifest["out.txt"].sha256 == expected(t.seq), t
    # recorded exactly once: one final event per task, in the store itself
    with sqlite3.connect(f.data / "corral.db") as db:
        finals = Counter(
            task_id
            for (task_id,) in db.execute(
                "SELECT task_id FROM events WHERE status IN ('succeeded', 'failed', 'killed')"
            )
        )
    duplicated = sum(1 for n in finals.values() if n > 1)
    lost = sum(1 for t in tasks if finals[t.id] == 0)
    retried = sum(1 for t in tasks if t.attempts > 1)
    print(
        f"chaos: {kills} workers killed (kill -9), {TASKS} tasks checked, {retried} re-run,"
        f" lost {lost}, duplicated {duplicated}, {time.monotonic() - started:.1f} s"
    )
    assert kills >= 3, "the job finished before the chaos did much: make the tasks longer"
    assert (lost, duplicated) == (0, 0)
