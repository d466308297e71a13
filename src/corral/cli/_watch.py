"""Following a job as its tasks finish, over the coordinator's event stream."""

from __future__ import annotations

import time

import click

from ..client import Client, Unreachable
from ..protocol import FINAL_STATUSES, Event
from ._common import print_json


def _line(event: Event) -> str:
    code = "" if event.exit_code is None else f" (exit {event.exit_code})"
    return f"{event.task_id} {event.status}{code}"


def follow(client: Client, job_id: str, as_json: bool, reconnect_for: float = 30.0) -> int:
    """Print each task as it finishes; 0 when all succeeded, else 1."""
    after = 0
    done: dict[str, str] = {}
    give_up = time.monotonic() + reconnect_for
    while True:
        try:
            for event in client.events(job_id, after):
                after = event.seq
                if event.status in FINAL_STATUSES:
                    done[event.task_id] = event.status
                    if as_json:
                        print_json(event)
                    else:
                        click.echo(_line(event))
            break
        except Unreachable:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.5)  # the coordinator may be restarting; resume from `after`
    job = client.job(job_id)
    if not as_json:
        counts = ", ".join(f"{n} {s}" for s, n in job.counts.items() if n)
        click.echo(f"job {job.id} {job.status}: {counts}")
    return 0 if job.status == "succeeded" else 1
