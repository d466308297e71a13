"""Eviction with a checkpoint (issue 14) end to end: real coordinator and workers over
loopback, tasks sandboxed when bubblewrap is there (the default), each test bounded in time.

The task counts, writing its count into $CORRAL_CHECKPOINT_DIR at every step, and never asks
for a save itself: the only checkpoint it can resume from is the one an eviction saves. Its
SIGTERM trap writes `term` there too, and each run prints where it started and whether the
trap had run, so its output proves what the eviction saved.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import pytest

from corral.client import Client
from corral.protocol import Job, Task, TaskSpec

from .conftest import Farm, WorkerProc, wait_for

MARK = "corral-evict-test"
_COUNT = (
    'd=$CORRAL_CHECKPOINT_DIR; i=$(cat "$d/i" 2>/dev/null || echo 0);'
    ' echo "from $i $(cat "$d/how" 2>/dev/null)"; rm -f "$d/how"; {trap};'
    ' while [ "$i" -lt "$1" ]; do sleep "$2"; i=$((i + 1)); echo "$i" > "$d/i"; done;'
    ' echo "$i" > count.txt'
)
TRAPS = _COUNT.replace("{trap}", """trap 'echo term > "$d/how"; exit 143' TERM""")
IGNORES = _COUNT.replace("{trap}", "trap '' TERM")


def counter(script: str, steps: int, step: float, **limits: float) -> TaskSpec:
    argv = ["sh", "-c", script, "sh", str(steps), str(step), MARK]
    return TaskSpec(argv, outputs=["count.txt"], limits=limits)


# how the task runs: hosted by a pooled runner (a command with no limits but wall time), as a
# fresh process in its sandbox (a CPU limit keeps it out of the pool), or unsandboxed
HOW = {
    "hosted": ((), {}),
    "sandboxed": ((), {"cpu_time": 60.0}),
    "unsandboxed": (("--no-sandbox",), {"cpu_time": 60.0}),
}


def progress(worker: WorkerProc) -> int:
    """How far the task running on `worker` has counted (from its checkpoint directory)."""
    counts = []
    for path in worker.work_dir.rglob(".corral/checkpoint/i"):
        try:
            counts.append(int(path.read_text()))
        except (OSError, ValueError):
            pass
    return max(counts, default=0)


def first_line(client: Client, task_id: str) -> str:
    return client.log(task_id)[0].decode().splitlines()[0].strip()


@dataclass
class Counting:
    """A task counting on a worker of a farm, `reached` steps in."""

    farm: Farm
    worker: WorkerProc
    client: Client
    job: Job
    task: Task
    reached: int


def counting(
    farm: Callable[..., Farm], spec: TaskSpec, grace: str, steps: int, args: tuple[str, ...] = ()
) -> Counting:
    """A farm with one worker (--checkpoint-grace `grace`) running `spec` `steps` steps in."""
    f = farm()
    w = f.start_worker(args=("--checkpoint-grace", grace, *args))
    client = f.client()
    job = client.submit_job([spec])
    (task,) = client.tasks(job.id)
    reached = wait_for(lambda: progress(w) >= steps and progress(w), 30, 0.05, "some steps")
    return Counting(f, w, client, job, task, reached)


def leftovers() -> list[int]:
    """Processes of the test's tasks still alive anywhere on this machine."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if MARK in (p.info["cmdline"] or []):
            found.append(p.pid)
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", list(HOW))
def test_sigterm_to_the_worker_evicts_its_task_which_resumes_on_another_worker(
    farm: Callable[..., Farm], how: str
) -> None:
    args, limits = HOW[how]
    c = counting(farm, counter(TRAPS, 30, 0.25, **limits), "20", 3, args)
    f, w1, client, job, task, reached = c.farm, c.worker, c.client, c.job, c.task, c.reached

    start = time.monotonic()
    w1.proc.send_signal(signal.SIGTERM)
    assert w1.proc.wait(20) == 0, w1.stderr()
    assert time.monotonic() - start < 10  # the trap ended it: no waiting out the 20 s grace
    given = client.task(task.id)
    assert (given.status, given.attempts) == ("queued", 0), given  # no attempt counted
    assert "the worker shut down; checkpoint saved" in (given.error or ""), given
    (saved,) = client.checkpoints(task.id)
    assert saved.attempt == 1 and not leftovers()

    w2 = f.start_worker(args=args)
    assert f.wait_job(client, job.id, timeout=40).status == "succeeded"
    done = client.task(task.id)
    assert (done.worker_id, done.attempts) == (w2.id, 1)
    started, how = first_line(client, task.id).split()[1:]
    assert how == "term" and int(started) >= reached  # resumed from what the trap left
    assert [e.status for e in client.events(job.id)] == [
        "running", "queued", "running", "succeeded",
    ]  # fmt: skip


@pytest.mark.timeout(60)
def test_drain_evict_kills_a_task_ignoring_sigterm_after_the_grace_and_saves_what_is_there(
    farm: Callable[..., Farm],
) -> None:
    c = counting(farm, counter(IGNORES, 28, 0.25), "2", 2)
    f, w1, client, job, task, reached = c.farm, c.worker, c.client, c.job, c.task, c.reached

    start = time.monotonic()
    rc, out, err = f.cli("drain", "--evict", w1.name, "--wait", "30")
    assert rc == 0, err
    assert out.split() == [w1.id, w1.name, "gone"]
    assert time.monotonic() - start >= 2.0  # it ignored SIGTERM: killed after the grace
    assert w1.proc.wait(10) == 0  # the drain made it leave
    assert not leftovers()  # nothing of the task survived its SIGKILL
    given = client.task(task.id)
    assert (given.status, given.attempts) == ("queued", 0), given
    assert "evicted; checkpoint saved" in (given.error or ""), given
    assert len(client.checkpoints(task.id)) == 1

    f.start_worker()
    assert f.wait_job(client, job.id, timeout=40).status == "succeeded"
    assert client.task(task.id).attempts == 1
    started, *how = first_line(client, task.id).split()[1:]
    # it went on counting through the grace; no trap ran, what was there was saved
    assert how == [] and int(started) >= reached + 4, (started, reached)


@pytest.mark.timeout(60)
def test_kill_checkpoint_ends_killed_and_retry_killed_resumes_it(
    farm: Callable[..., Farm],
) -> None:
    c = counting(farm, counter(TRAPS, 24, 0.25), "20", 3)
    f, w1, client, job, task, reached = c.farm, c.worker, c.client, c.job, c.task, c.reached

    rc, out, err = f.cli("kill", "--checkpoint", task.id)
    assert (rc, out) == (0, f"{task.id[:12]} running (killed once checkpointed)\n"), err
    killed = f.wait_task(client, task.id, {"killed", "succeeded", "failed"}, timeout=15)
    assert (killed.status, killed.error, killed.attempts) == ("killed", "killed", 1)
    (saved,) = client.checkpoints(task.id)
    assert saved.attempt == 1
    assert [w.status for w in client.workers() if w.id == w1.id] == ["online"]  # stays
    rc, out, err = f.cli("retry", job.id)  # failed ones only: a killed task stays killed
    assert (rc, out.split()) == (0, [job.id[:12], "killed"]), err

    rc, out, err = f.cli("retry", "--killed", job.id)
    assert rc == 0 and out.split()[0] == job.id[:12], err
    assert f.wait_job(client, job.id, timeout=30).status == "succeeded"
    done = client.task(task.id)
    assert (done.attempts, done.worker_id) == (2, w1.id)
    started, how = first_line(client, task.id).split()[1:]
    assert how == "term" and int(started) >= reached


@pytest.mark.timeout(30)
def test_kill_checkpoint_and_retry_of_unknown_ids_fail_in_one_line(
    farm: Callable[..., Farm],
) -> None:
    f = farm()
    for args in (("kill", "--checkpoint", "nope"), ("retry", "--killed", "nope")):
        rc, out, err = f.cli(*args)
        assert rc != 0 and out == "" and len(err.strip().splitlines()) == 1, (args, err)
        assert "nope" in err
    rc, _, err = f.cli("drain", "--evict", "nope")
    assert rc != 0 and len(err.strip().splitlines()) == 1, err
