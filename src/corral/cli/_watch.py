"""Following a job as its tasks finish, over the coordinator's event stream.

On a terminal this is a live rich progress bar (done/total, rate, ETA, failures, with a line
for each failed task); otherwise, and with --json, one plain line per finished task.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Task as BarTask
from rich.text import Text

from ..client import Client, Unreachable
from ..protocol import FINAL_STATUSES, Event
from ._common import print_json
from ._format import failure_reason, last_line, short

TAIL = 4096  # bytes of stderr read for its last line


def why_failed(client: Client, task_id: str) -> str:
    """A finished task's failure in one line; for a bare exit code, with the last line of
    its stderr (read from the end of the stored stream)."""
    task = client.task(task_id)
    tail = ""
    if task.status == "failed" and not task.error and task.exit_code:
        tail = last_line(client.log(task_id, "stderr", tail=TAIL)[0])
    return failure_reason(task, tail)


def _line(client: Client, event: Event) -> str:
    if event.status == "succeeded":
        return f"{short(event.task_id)} succeeded"
    return f"{short(event.task_id)} {event.status}: {why_failed(client, event.task_id)}"


@dataclass
class Tally:
    """Finished tasks of a job, counted once each: pure, fed with events."""

    total: int
    final: dict[str, str] = field(default_factory=dict)

    def feed(self, event: Event) -> bool:
        """Count a final event; True when it is the first for its task."""
        if event.status not in FINAL_STATUSES or event.task_id in self.final:
            return False
        self.final[event.task_id] = event.status
        self.total = max(self.total, len(self.final))
        return True

    @property
    def done(self) -> int:
        """Tasks in a final status."""
        return len(self.final)

    @property
    def failures(self) -> int:
        """Tasks that failed or were killed."""
        return sum(1 for s in self.final.values() if s != "succeeded")


class RateColumn(ProgressColumn):
    """Tasks finished per second."""

    def render(self, task: BarTask) -> Text:
        """The current rate, once there is one."""
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} tasks/s", style="cyan")


def _events(
    client: Client, job_id: str, reconnect_for: float, only: str | None = None
) -> Iterator[Event]:
    """The job's events (with `only`, that task's, until it is final)."""
    after = 0
    give_up = time.monotonic() + reconnect_for
    while True:
        try:
            for event in client.events(job_id, after):
                after = event.seq
                if only is None or event.task_id == only:
                    yield event
                if event.task_id == only and event.status in FINAL_STATUSES:
                    return
            return
        except Unreachable:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.5)  # the coordinator may be restarting; resume from `after`


def _plain(
    client: Client, job_id: str, as_json: bool, reconnect_for: float, only: str | None
) -> None:
    for event in _events(client, job_id, reconnect_for, only):
        if event.status in FINAL_STATUSES:
            if as_json:
                print_json(event)
            else:
                click.echo(_line(client, event))


def _live(client: Client, job_id: str, total: int, reconnect_for: float, only: str | None) -> None:
    tally = Tally(total)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failures]} failed"),
        RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(file=sys.stdout),
    )
    with progress:
        what = f"task {short(only)}" if only else f"job {short(job_id)}"
        bar = progress.add_task(what, total=total, failures=0)
        for event in _events(client, job_id, reconnect_for, only):
            if tally.feed(event):
                if event.status != "succeeded":
                    progress.console.print(_line(client, event), style="red", markup=False)
                progress.update(
                    bar, completed=tally.done, total=tally.total, failures=tally.failures
                )


def follow(
    client: Client,
    job_id: str,
    as_json: bool,
    reconnect_for: float = 30.0,
    live: bool | None = None,
    only: str | None = None,
) -> int:
    """Report each task as it finishes (with `only`, that one task of the job); 0 when all
    succeeded, else 1."""
    if live is None:
        live = sys.stdout.isatty()
    if live and not as_json:
        total = 1 if only else client.job(job_id).total
        _live(client, job_id, total, reconnect_for, only)
    else:
        _plain(client, job_id, as_json, reconnect_for, only)
    if only:
        return 0 if client.task(only).status == "succeeded" else 1
    job = client.job(job_id)
    if not as_json:
        counts = ", ".join(f"{n} {s}" for s, n in job.counts.items() if n)
        click.echo(f"job {short(job.id)} {job.status}: {counts}")
    return 0 if job.status == "succeeded" else 1
