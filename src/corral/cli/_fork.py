"""`corral submit --job JOB` and `--after ID`: add tasks to a running job, and dependencies.

Inside a task, `corral submit --job "$CORRAL_JOB_ID" --wait -- CMD` forks a child into the
task's own job and waits for it; while it waits, the task is marked blocked so its slot may be
used by the child (the design is in client/_current.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import click
import msgspec

from ..client import Client
from ..protocol import FINAL_STATUSES, Task, TaskSpec
from ._common import FailedWork, print_json

__all__ = ["add_to_job", "with_after"]


def with_after(specs: list[TaskSpec], after: tuple[str, ...]) -> list[TaskSpec]:
    """Every spec also waits for the tasks in `after`."""
    if not after:
        return specs
    return [msgspec.structs.replace(s, after=[*s.after, *after]) for s in specs]


@contextlib.contextmanager
def _blocked(client: Client, job_id: str) -> Iterator[None]:
    """Inside a task of this job: marked blocked while waiting on its children."""
    task_id = os.environ.get("CORRAL_TASK_ID")
    if not task_id or os.environ.get("CORRAL_JOB_ID") != job_id:
        yield
        return
    client.set_blocked(task_id, True)
    try:
        yield
    finally:
        client.set_blocked(task_id, False)


def _wait(client: Client, job_id: str, ids: set[str]) -> list[Task]:
    """Follow the job's events until every task in `ids` is final (the job itself may go on)."""
    left, after = set(ids), 0
    while left:
        for event in client.events(job_id, after):
            after = event.seq
            if event.status in FINAL_STATUSES:
                left.discard(event.task_id)
            if not left:
                break
        else:
            left -= {t for t in left if client.task(t).status in FINAL_STATUSES}
    return [client.task(t) for t in ids]


def add_to_job(
    client: Client, job_id: str, specs: list[TaskSpec], as_json: bool, wait: bool
) -> None:
    """Add tasks to a job; print their ids; with `wait`, exit non-zero unless all succeed."""
    tasks = client.add_tasks(job_id, specs)
    if not wait:
        if as_json:
            print_json(tasks)
        else:
            for task in tasks:
                click.echo(task.id)
        return
    with _blocked(client, job_id):
        done = _wait(client, job_id, {t.id for t in tasks})
    order = {t.id: i for i, t in enumerate(tasks)}
    done.sort(key=lambda t: order[t.id])
    if as_json:
        print_json(done)
    else:
        for task in done:
            click.echo(f"{task.id} {task.status}")
    failed = [t for t in done if t.status != "succeeded"]
    if failed:
        raise FailedWork(f"{len(failed)} of {len(done)} tasks did not succeed")
