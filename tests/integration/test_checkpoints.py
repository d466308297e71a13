"""Checkpoints end to end (issue 14): real coordinator and workers over loopback, tasks
sandboxed when bubblewrap is there (the default), each test bounded in time.

Every task here writes its progress to $CORRAL_CHECKPOINT_DIR and prints where it started,
so its output proves which checkpoint (if any) it resumed from.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import cloudpickle
import pytest

from corral.client import Client
from corral.protocol import TaskSpec

from .conftest import PYTHON, Farm, wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SAVE = f"{PYTHON} -m corral checkpoint"
# counts to $1, saving after each step; prints where it started
COUNTER = (
    'd=$CORRAL_CHECKPOINT_DIR; i=$(cat "$d/i" 2>/dev/null || echo 0); echo "from $i";'
    ' while [ "$i" -lt "$1" ]; do i=$((i + 1)); echo "$i" > "$d/i"; ' + SAVE + ";"
    ' sleep "$2"; done; echo "$i" > count.txt'
)


def sh(script: str, *args: str, **kw: Any) -> TaskSpec:
    return TaskSpec(argv=["sh", "-c", script, "sh", *args], **kw)


def saved(client: Client, task_id: str) -> list[int]:
    return [c.n for c in client.checkpoints(task_id)]


def log(client: Client, task_id: str) -> str:
    return client.log(task_id)[0].decode()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("args", [(), ("--no-sandbox",)], ids=["sandboxed", "unsandboxed"])
def test_exit_code_85_saves_and_runs_again_in_the_same_attempt(
    farm: Callable[..., Farm], args: tuple[str, ...]
) -> None:
    f = farm(workers=1, args=args)
    client = f.client()
    script = (
        'd=$CORRAL_CHECKPOINT_DIR; n=$(cat "$d/n" 2>/dev/null || echo 0); echo "run $n";'
        ' echo $((n + 1)) > "$d/n"; [ "$n" -lt 2 ] && exit 85; echo done > out.txt'
    )
    job = client.submit_job([sh(script)])
    done = f.wait_job(client, job.id, timeout=60)
    (task,) = client.tasks(job.id)
    assert done.status == "succeeded", task
    assert task.attempts == 1  # no attempt counted for a checkpoint exit
    assert log(client, task.id) == "run 0\nrun 1\nrun 2\n"
    assert list(task.manifest) == ["out.txt"]  # the checkpoint is no output
    assert saved(client, task.id) == [1, 2]  # the last two kept
    rc, out, _ = f.cli("show", task.id)
    assert rc == 0 and "#2 " in out and "attempt 1" in out, out


@pytest.mark.timeout(110)
def test_a_task_resumes_on_another_worker_from_its_last_checkpoint(
    farm: Callable[..., Farm],
) -> None:
    """kill -9 the worker of a task that saves with `corral checkpoint`: the task restarts
    on another worker from its last saved checkpoint, not from zero."""
    f = farm(workers=1)
    client = f.client()
    job = client.submit_job([sh(COUNTER, "8", "0.4", max_attempts=3)])
    (task,) = client.tasks(job.id)
    wait_for(lambda: max(saved(client, task.id), default=0) >= 3, 40, 0.1, what="3 saves")
    f.kill_worker(f.workers[0])
    last = max(saved(client, task.id))
    f.start_worker()
    done = f.wait_job(client, job.id, timeout=60)
    (task,) = client.tasks(job.id)
    assert done.status == "succeeded", task
    assert task.attempts == 2
    started = int(log(client, task.id).split()[1])
    assert started >= last >= 3  # resumed from the last checkpoint it had recorded
    assert client.checkpoints(task.id)[-1].attempt == 2


def count_in_python(steps: int) -> str:
    """A function task: counts to `steps` with corral.checkpoint, saving after each."""
    import corral

    start = i = corral.checkpoint.load(0)
    while i < steps:
        i += 1
        corral.checkpoint.save(i)
        time.sleep(0.4)
    return f"from {start} to {i}"


@pytest.mark.timeout(110)
def test_python_tasks_save_and_load_across_a_lost_worker(farm: Callable[..., Farm]) -> None:
    f = farm(workers=1)
    client = f.client()
    future = client.submit(count_in_python, 8)
    task_id = wait_for(lambda: future.task_id, 20, what="the task")
    wait_for(lambda: max(saved(client, task_id), default=0) >= 2, 40, 0.1, what="2 saves")
    f.kill_worker(f.workers[0])
    f.start_worker()
    result = future.result(60)
    start = int(result.split()[1])
    assert start >= 2 and result.endswith("to 8"), result


@pytest.mark.timeout(110)
def test_a_save_cut_short_leaves_the_previous_checkpoint(farm: Callable[..., Farm]) -> None:
    """The worker dies half-way through its second save (blobs uploaded, not recorded: a
    test hook kills it there): the task resumes elsewhere from the first."""
    f = farm()
    dying = f.start_worker(env={"CORRAL_TEST_CHECKPOINT_CRASH": "2"})
    client = f.client()
    job = client.submit_job([sh(COUNTER, "4", "0.2", max_attempts=3)])
    (task,) = client.tasks(job.id)
    wait_for(lambda: dying.proc.poll() is not None, 40, 0.1, what="the worker to die")
    assert saved(client, task.id) == [1]
    f.start_worker()
    done = f.wait_job(client, job.id, timeout=60)
    (task,) = client.tasks(job.id)
    assert done.status == "succeeded", task
    assert log(client, task.id).startswith("from 1\n")  # not 2: that save never happened
    assert saved(client, task.id)[-1] == 4


@pytest.mark.timeout(90)
def test_a_checkpoint_that_fails_at_once_falls_back_then_to_scratch(
    farm: Callable[..., Farm],
) -> None:
    """Attempt 1 saves 1 and 2, then fails; 2 is corrupt (the task fails straight after
    restoring it), so attempt 3 starts from 1."""
    f = farm(workers=1)
    client = f.client()
    script = (
        'd=$CORRAL_CHECKPOINT_DIR; i=$(cat "$d/i" 2>/dev/null || echo 0); echo "from $i";'
        f' case $i in 0) echo 1 > "$d/i"; {SAVE}; echo 2 > "$d/i"; {SAVE}; exit 1;;'
        " 2) exit 1;; esac"
    )
    job = client.submit_job([sh(script, retries=2)])
    done = f.wait_job(client, job.id, timeout=60)
    (task,) = client.tasks(job.id)
    assert done.status == "succeeded", (task.error, task.exit_code, log(client, task.id))
    assert task.attempts == 3
    assert log(client, task.id) == "from 1\n"
    assert [(c.n, c.bad) for c in client.checkpoints(task.id)] == [(1, False), (2, True)]
