"""Commands that look at jobs, tasks and workers: `ps`, `show`, `workers`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

import click

from ..client import Client
from ..protocol import TASK_STATUSES, CheckpointInfo, Job, Spread, Task, Worker, cache_summary
from ._common import (
    client_errors,
    json_option,
    make_client,
    print_json,
    print_table,
    server_options,
)
from ._complete import complete_ids
from ._format import Column, ago, duration, short, size
from ._ids import match_ids, resolve

DAY = 86400.0
PAGE = 1000


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _cpu(t: Task) -> str | None:
    return None if t.cpu_seconds is None else f"{t.cpu_seconds:.2f}s"


def _counts(job: Job) -> str:
    return " ".join(f"{s}={n}" for s, n in job.counts.items() if n)


JOB_COLUMNS = (
    Column("id"),
    Column("name", flex=True),
    Column("status"),
    Column("done", right=True),
    Column("failed", rank=2, right=True),
    Column("owner", rank=3),
    Column("created", rank=1),
)


def job_rows(jobs: Sequence[Job], now: float) -> list[tuple[object, ...]]:
    """`ps` rows: id, name, status, finished/total, failures, owner, age."""
    rows: list[tuple[object, ...]] = []
    for j in jobs:
        failed = j.counts.get("failed", 0) + j.counts.get("killed", 0)
        finished = failed + j.counts.get("succeeded", 0)
        rows.append(
            (short(j.id), j.name, j.status, f"{finished}/{j.total}", failed or "", j.owner)
            + (ago(j.created, now),)
        )
    return rows


TASK_COLUMNS = (
    Column("id"),
    Column("task", flex=True),
    Column("status"),
    Column("exit", rank=1, right=True),
    Column("run time", rank=2, right=True),
    Column("cpu", rank=3, right=True),
    Column("mem", rank=4, right=True),
    Column("peak mem", rank=5, right=True),
    Column("tries", rank=6, right=True),
    Column("worker", rank=7),
    Column("error", rank=8, flex=True),
)


def _run_time(t: Task, now: float) -> str:
    if t.started is None:
        return ""
    return duration((t.finished or now) - t.started)


def usage_cells(t: Task) -> tuple[str, str, str]:
    """cpu, mem and peak mem: a running task's CPU% and memory now and at most (sampled by
    its worker), a finished one's CPU seconds and peak memory (measured with its result)."""
    if t.live is not None and t.status == "running":
        return f"{t.live.cpu_percent:.0f}%", size(t.live.memory), size(t.live.peak_memory)
    return _cpu(t) or "", "", size(t.peak_memory)


def task_rows(tasks: Sequence[Task], now: float) -> list[tuple[object, ...]]:
    """`ps JOB` rows: id, name (or command), status, exit, run time, cpu, memory, ..."""
    return [
        (
            short(t.id),
            t.name or " ".join(t.argv),
            t.status,
            t.exit_code,
            _run_time(t, now),
            *usage_cells(t),
            f"{t.attempts}/{t.max_attempts}",
            short(t.worker_id),
            t.error,
        )
        for t in tasks
    ]


def _jobs(
    client: Client, limit: int, every: bool, status: str | None, owner: str | None
) -> list[Job]:
    if not every:
        return client.jobs(limit, status=status, owner=owner)
    out: list[Job] = []
    while True:
        got = client.jobs(PAGE, status=status, owner=owner, offset=len(out))
        out += got
        if len(got) < PAGE:
            return out


@click.command()
@click.argument("ref", metavar="[JOB]", required=False, shell_complete=complete_ids)
@click.option("--status", type=click.Choice(TASK_STATUSES), help="Only jobs (or tasks) in it.")
@click.option("--owner", default=None, help="Only this owner's jobs (for admins).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="Newest jobs.")
@click.option("--all", "every", is_flag=True, help="Every job, not only the newest --limit.")
@json_option
@server_options
@client_errors
def ps(
    ref: str | None,
    status: str | None,
    owner: str | None,
    limit: int,
    every: bool,
    as_json: bool,
    server: str | None,
    token: str | None,
) -> None:
    """List jobs, newest first, or one job's tasks (JOB: an id, a prefix, or a task's)."""
    with make_client(server, token) as client:
        if ref is None:
            jobs = _jobs(client, limit, every, status, owner)
            if as_json:
                return print_json(jobs)
            return print_table(JOB_COLUMNS, job_rows(jobs, time.time()))
        tasks = client.tasks(match_ids(client, ref).job_id)
    tasks = [t for t in tasks if status is None or t.status == status]
    if as_json:
        return print_json(tasks)
    print_table(TASK_COLUMNS, task_rows(tasks, time.time()))


@click.command()
@click.argument("ref", metavar="ID", shell_complete=complete_ids)
@json_option
@server_options
@client_errors
def show(ref: str, as_json: bool, server: str | None, token: str | None) -> None:
    """Show one job or task (an id, a unique prefix of 4 or more, or JOB/TASKNAME)."""
    with make_client(server, token) as client:
        found = resolve(client, ref)
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
            *_usage_fields(found),
        ]
    else:
        fields = _task_fields(found)
        fields.append(("checkpoints", "; ".join(_checkpoint(c) for c in reversed(saved))))
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key.ljust(width)}  {'' if value is None else value}")


def _spread(s: Spread | None, unit: Callable[[float], str]) -> str:
    return "" if s is None else f"median {unit(s.median)}, p95 {unit(s.p95)}, max {unit(s.max)}"


def _usage_fields(job: Job) -> list[tuple[str, object]]:
    """Peak memory and CPU seconds over the job's finished tasks (where measured)."""
    u = job.usage
    if u is None:
        return []
    return [
        ("peak_memory", _spread(u.peak_memory, size) + f" ({u.measured} finished tasks)"),
        ("cpu_seconds", _spread(u.cpu_seconds, lambda n: f"{n:.2f}s")),
    ]


def _checkpoint(c: CheckpointInfo) -> str:
    bad = ", not restored: an attempt failed straight after restoring it" if c.bad else ""
    files = f"{c.files} file{'s' if c.files != 1 else ''}"
    return f"#{c.n} {_when(c.created)} attempt {c.attempt}, {size(c.size)} in {files}{bad}"


def _live_fields(t: Task) -> list[tuple[str, object]]:
    """A running task's latest sample, from its worker's last heartbeat."""
    if t.live is None or t.status != "running":
        return []
    live = t.live
    return [
        ("cpu_now", f"{live.cpu_percent:.0f}% ({live.cpu_seconds:.1f} s so far)"),
        ("memory_now", f"{size(live.memory)} (peak {size(live.peak_memory)})"),
        ("run_time", duration(time.time() - t.started) if t.started else ""),
    ]


def _task_fields(t: Task) -> list[tuple[str, object]]:
    return [
        ("id", t.id),
        ("name", t.name),
        ("job", t.job_id),
        ("status", t.status),
        ("argv", " ".join(t.argv)),
        ("exit_code", t.exit_code),
        ("error", t.error),
        ("attempts", f"{t.attempts}/{t.max_attempts}"),
        ("worker", t.worker_id),
        # measured where the worker gave the task a cgroup; blank elsewhere
        ("peak_memory", size(t.peak_memory)),
        ("cpu_seconds", _cpu(t)),
        *_live_fields(t),
        ("inputs", ", ".join(t.inputs)),
        ("outputs", ", ".join(t.manifest)),
        ("created", _when(t.created)),
        ("started", _when(t.started)),
        ("finished", _when(t.finished)),
    ]


def visible_workers(found: Sequence[Worker], now: float) -> list[Worker]:
    """The workers `corral workers` lists: not those that left or were lost over a day ago
    (the coordinator keeps them for history)."""
    return [w for w in found if w.status not in ("lost", "gone") or now - w.last_heartbeat < DAY]


WORKER_COLUMNS = (
    Column("id"),
    Column("name", flex=True),
    Column("status"),
    Column("slots", right=True),
    Column("seen", rank=1),
    Column("platform", rank=2),
    Column("limits", rank=3),
    Column("registered", rank=5),
    Column("cache", rank=4, flex=True),
)


@click.command()
@click.argument("ref", metavar="JOB", shell_complete=complete_ids)
@click.option("--killed", is_flag=True, help="Requeue its killed tasks too.")
@json_option
@server_options
@client_errors
def retry(ref: str, killed: bool, as_json: bool, server: str | None, token: str | None) -> None:
    """Requeue a job's failed tasks as new attempts, each from its last good checkpoint (a
    task's id stands for its job)."""
    with make_client(server, token) as client:
        job = client.retry(match_ids(client, ref).job_id, killed)
    if as_json:
        return print_json(job)
    click.echo(f"{short(job.id)} {job.status}")


def worker_rows(found: Sequence[Worker], now: float) -> list[tuple[object, ...]]:
    """`corral workers` rows."""
    return [
        (
            short(w.id),
            w.name,
            # a worker without a sandbox says so on every line: its tasks can read its files
            w.status + (" NO SANDBOX" if w.capabilities.get("sandbox") == "none" else ""),
            f"{w.slots_used}/{w.slots}",
            ago(w.last_heartbeat, now),
            f"{w.capabilities.get('os', '')}/{w.capabilities.get('arch', '')}",
            w.capabilities.get("limits", ""),  # cgroup: whole task tree; rlimit: per process
            ago(w.registered, now),
            cache_summary(w.capabilities),
        )
        for w in found
    ]


@click.command()
@click.option("--all", "every", is_flag=True, help="Also workers gone for more than a day.")
@json_option
@server_options
@client_errors
def workers(every: bool, as_json: bool, server: str | None, token: str | None) -> None:
    """List the workers (those gone for over a day only with --all)."""
    with make_client(server, token) as client:
        found = client.workers()
    if as_json:  # unchanged: every worker the coordinator knows
        return print_json(found)
    now = time.time()
    shown = found if every else visible_workers(found, now)
    print_table(WORKER_COLUMNS, worker_rows(shown, now))
