"""Commands that look at and act on jobs, tasks and workers."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import click

from ..protocol import CheckpointInfo, Job, Task, cache_summary, format_size
from ._common import (
    client_errors,
    json_option,
    make_client,
    print_json,
    print_table,
    server_options,
)
from ._watch import follow


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _peak(t: Task) -> str | None:
    return None if t.peak_memory is None else format_size(t.peak_memory)


def _cpu(t: Task) -> str | None:
    return None if t.cpu_seconds is None else f"{t.cpu_seconds:.2f}s"


def _counts(job: Job) -> str:
    return " ".join(f"{s}={n}" for s, n in job.counts.items() if n)


@click.command()
@click.argument("job_id", required=False)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@json_option
@server_options
@client_errors
def ps(
    job_id: str | None, limit: int, as_json: bool, server: str | None, token: str | None
) -> None:
    """List jobs, or one job's tasks."""
    with make_client(server, token) as client:
        if job_id is None:
            jobs = client.jobs(limit)
            if as_json:
                return print_json(jobs)
            rows = [(j.id, j.name, j.status, j.total, _counts(j), _when(j.created)) for j in jobs]
            return print_table("jobs", ["id", "name", "status", "tasks", "counts", "created"], rows)
        client.job(job_id)
        tasks = client.tasks(job_id)
        if as_json:
            return print_json(tasks)
        rows2 = [
            (
                t.id,
                t.status,
                t.exit_code,
                t.attempts,
                _peak(t),
                _cpu(t),
                t.worker_id and t.worker_id[:12],
                " ".join(t.argv)[:60],
            )
            for t in tasks
        ]
        columns = ["id", "status", "exit", "attempts", "peak mem", "cpu", "worker", "argv"]
        print_table(f"tasks of job {job_id}", columns, rows2)


@click.command()
@click.argument("some_id")
@json_option
@server_options
@client_errors
def show(some_id: str, as_json: bool, server: str | None, token: str | None) -> None:
    """Show one job or task."""
    with make_client(server, token) as client:
        found = client.find(some_id)
        saved = client.checkpoints(found.id) if isinstance(found, Task) else []
    if as_json:
        return print_json(found)
    if isinstance(found, Job):
        fields = [
            ("id", found.id),
            ("name", found.name),
            ("owner", found.owner),
            ("status", found.status),
            ("tasks", found.total),
            ("counts", _counts(found)),
            ("created", _when(found.created)),
        ]
    else:
        fields = _task_fields(found)
        fields.append(("checkpoints", "; ".join(_checkpoint(c) for c in reversed(saved))))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key.ljust(width)}  {'' if value is None else value}")


def _checkpoint(c: CheckpointInfo) -> str:
    bad = ", not restored: an attempt failed straight after restoring it" if c.bad else ""
    files = f"{c.files} file{'s' if c.files != 1 else ''}"
    return f"#{c.n} {_when(c.created)} attempt {c.attempt}, {format_size(c.size)} in {files}{bad}"


def _task_fields(t: Task) -> list[tuple[str, object]]:
    return [
        ("id", t.id),
        ("job", t.job_id),
        ("status", t.status),
        ("argv", " ".join(t.argv)),
        ("exit_code", t.exit_code),
        ("error", t.error),
        ("attempts", f"{t.attempts}/{t.max_attempts}"),
        ("worker", t.worker_id),
        # measured where the worker gave the task a cgroup; blank elsewhere
        ("peak_memory", _peak(t)),
        ("cpu_seconds", _cpu(t)),
        ("inputs", ", ".join(t.inputs)),
        ("outputs", ", ".join(t.manifest)),
        ("created", _when(t.created)),
        ("started", _when(t.started)),
        ("finished", _when(t.finished)),
    ]


@click.command()
@click.argument("task_id")
@click.option("--stderr", "stream", flag_value="stderr", help="Show stderr instead of stdout.")
@click.option("--stdout", "stream", flag_value="stdout", default=True, hidden=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the task finishes.")
@server_options
@client_errors
def logs(task_id: str, stream: str, follow: bool, server: str | None, token: str | None) -> None:
    """Show a task's output."""
    out = sys.stdout.buffer
    with make_client(server, token) as client:
        client.task(task_id)
        offset = 0
        while True:
            # live output is a prefix of the final stream, so one offset serves both
            data, final = client.log(task_id, stream, offset)
            out.write(data)
            out.flush()
            offset += len(data)
            if final or (not data and not follow):
                return
            if not data:
                time.sleep(0.3)


@click.command()
@click.argument("some_id")
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="Directory.")
@json_option
@server_options
@client_errors
def fetch(some_id: str, to: str, as_json: bool, server: str | None, token: str | None) -> None:
    """Write results to DIR/<task-id>/: returned files, stdout and stderr."""
    with make_client(server, token) as client:
        written = client.fetch(some_id, Path(to))
    if as_json:
        return print_json([str(p) for p in written])
    click.echo(f"fetched {len(written)} task(s) into {to}")


@click.command()
@click.argument("job_id")
@json_option
@server_options
@client_errors
def wait(job_id: str, as_json: bool, server: str | None, token: str | None) -> None:
    """Print a line as each task finishes; exit 0 only if all succeeded."""
    with make_client(server, token) as client:
        client.job(job_id)
        raise SystemExit(follow(client, job_id, as_json))


@click.command()
@click.argument("some_id")
@click.option(
    "--checkpoint",
    is_flag=True,
    help="Running tasks get SIGTERM and their worker's grace period, their checkpoint is"
    " saved, then they end killed; `corral retry --killed` resumes them from it.",
)
@json_option
@server_options
@client_errors
def kill(
    some_id: str, checkpoint: bool, as_json: bool, server: str | None, token: str | None
) -> None:
    """Kill a job's tasks, or one task, with their whole process trees."""
    with make_client(server, token) as client:
        found = client.kill(some_id, checkpoint)
    if as_json:
        return print_json(found)
    live = found.status in ("queued", "running")
    click.echo(f"{found.id} {found.status}" + (" (killed once checkpointed)" if live else ""))


@click.command()
@click.argument("job_id")
@click.option("--killed", is_flag=True, help="Requeue its killed tasks too.")
@json_option
@server_options
@client_errors
def retry(job_id: str, killed: bool, as_json: bool, server: str | None, token: str | None) -> None:
    """Requeue a job's failed tasks as new attempts, each from its last good checkpoint."""
    with make_client(server, token) as client:
        job = client.retry(job_id, killed)
    if as_json:
        return print_json(job)
    click.echo(f"{job.id} {job.status}")


@click.command()
@json_option
@server_options
@client_errors
def workers(as_json: bool, server: str | None, token: str | None) -> None:
    """List the workers."""
    with make_client(server, token) as client:
        found = client.workers()
    if as_json:
        return print_json(found)
    rows = [
        (
            w.id,
            w.name,
            # a worker without a sandbox says so on every line: its tasks can read its files
            w.status + (" NO SANDBOX" if w.capabilities.get("sandbox") == "none" else ""),
            f"{w.slots_used}/{w.slots}",
            f"{w.capabilities.get('os', '')}/{w.capabilities.get('arch', '')}",
            w.capabilities.get("limits", ""),  # cgroup: whole task tree; rlimit: per process
            cache_summary(w.capabilities),
            _when(w.last_heartbeat),
        )
        for w in found
    ]
    columns = ["id", "name", "status", "slots", "platform", "limits", "cache", "last heartbeat"]
    print_table("workers", columns, rows)
