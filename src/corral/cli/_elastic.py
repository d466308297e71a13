"""Farm-shape commands and worker options: `why`, `drain`, and the worker's cache, exposed
environment and `--drain` flags."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..client import Client
from ..protocol import Task, Worker, explain, parse_size
from ..worker.capabilities import exposed_env
from ._common import (
    Fail,
    FailedWork,
    client_errors,
    json_option,
    make_client,
    print_json,
    server_options,
)
from ._complete import complete_ids
from ._format import short
from ._ids import match_ids
from ._watch import why_failed

F = TypeVar("F", bound=Callable[..., Any])


def elastic_options(fn: F) -> F:
    """The worker's --cache-size, --expose-env and --drain options."""
    fn = click.option(
        "--drain",
        "drain_worker",
        metavar="WORKER",
        default=None,
        help="Do not start a worker: ask the coordinator to drain WORKER (id or name).",
    )(fn)
    fn = click.option(
        "--expose-env",
        "expose_env",
        multiple=True,
        metavar="NAME[=VALUE]",
        help="Pass this variable (from this environment, or VALUE) to tasks and advertise it.",
    )(fn)
    fn = click.option(
        "--cache-size",
        default=None,
        metavar="SIZE",
        help="Bound the file cache, e.g. 500M or 2G (least recently used blobs go first).",
    )(fn)
    return fn


def elastic_config(options: dict[str, Any]) -> dict[str, Any]:
    """WorkerConfig fields from the parsed options; a bad size fails in one line."""
    size = options.get("cache_size")
    try:
        cache_size = None if size is None else parse_size(size)
    except ValueError as exc:
        raise Fail(f"--cache-size: {exc}") from exc
    names = list(options.get("expose_env") or ())
    bad = [n for n in names if not n.partition("=")[0]]
    if bad:
        raise Fail(f"--expose-env {bad[0]!r} must look like NAME or NAME=VALUE")
    return {"cache_size": cache_size, "expose_env": exposed_env(names)}


def find_worker(client: Client, ref: str) -> Worker:
    """A worker by id, or by name among those still connected."""
    found = client.workers()
    by_id = [w for w in found if w.id == ref]
    if by_id:
        return by_id[0]
    named = [w for w in found if w.name == ref and w.status not in ("lost", "gone")]
    if len(named) > 1:
        raise Fail(f"{len(named)} connected workers are named {ref!r}; give the id")
    # a worker that already left is reported as it is: draining it again changes nothing
    named = named or sorted((w for w in found if w.name == ref), key=lambda w: w.registered)
    if not named:
        raise Fail(f"no worker {ref!r}; list them with `corral workers`")
    return named[-1]


def drain_now(
    server: str | None, token: str | None, ref: str, wait: float | None = None, evict: bool = False
) -> Worker:
    """Ask the coordinator to drain a worker (evicting its tasks, with `evict`); with `wait`,
    until it has left."""
    with make_client(server, token) as client:
        worker = client.drain_worker(find_worker(client, ref).id, evict)
        deadline = time.monotonic() + (wait or 0)
        while wait is not None and worker.status not in ("lost", "gone"):
            if time.monotonic() > deadline:
                raise FailedWork(f"worker {worker.id} still has work after {wait:g} s")
            time.sleep(0.2)
            worker = next(w for w in client.workers() if w.id == worker.id)
    return worker


@client_errors
def report_drain(server: str | None, token: str | None, ref: str) -> None:
    """`corral worker --drain WORKER`: ask for the drain and say so."""
    worker = drain_now(server, token, ref)
    click.echo(f"{worker.id} {worker.name} {worker.status}")


@click.command()
@click.argument("worker_ref", metavar="WORKER")
@click.option(
    "--wait",
    type=click.FloatRange(0),
    default=None,
    metavar="SECONDS",
    help="Wait up to this long for the worker to finish its tasks and leave.",
)
@click.option(
    "--evict",
    is_flag=True,
    help="Do not let running tasks finish: evict them (SIGTERM, the worker's grace period,"
    " checkpoint saved) and requeue them, not counting the attempt.",
)
@json_option
@server_options
@client_errors
def drain(
    worker_ref: str,
    wait: float | None,
    evict: bool,
    as_json: bool,
    server: str | None,
    token: str | None,
) -> None:
    """Let a worker finish its running tasks (or evict them), take no new ones, and leave."""
    worker = drain_now(server, token, worker_ref, wait, evict)
    if as_json:
        return print_json(worker)
    click.echo(f"{worker.id} {worker.name} {worker.status}")


@click.command()
@click.argument("ref", metavar="ID", shell_complete=complete_ids)
@json_option
@server_options
@client_errors
def why(ref: str, as_json: bool, server: str | None, token: str | None) -> None:
    """Say in plain words why a task is not running (or where it stands); for a job, each
    task that has not succeeded."""
    with make_client(server, token) as client:
        found = match_ids(client, ref)
        if found.kind == "task":
            tasks = [client.task(found.id)]
        else:  # a job's list carries no pending reasons: read each task that needs one
            listed = client.tasks(found.id)
            tasks = [client.task(t.id) if t.status == "queued" else t for t in listed]
            tasks = [t for t in tasks if t.status != "succeeded"]
        said = [(t, _why(client, t)) for t in tasks]
    if as_json:
        if found.kind == "task":
            return print_json(
                {"id": said[0][0].id, "status": said[0][0].status, "reason": said[0][1]}
            )
        return print_json([{"id": t.id, "status": t.status, "reason": r} for t, r in said])
    if found.kind == "task":
        return click.echo(said[0][1])
    if not said:
        click.echo(f"every task of job {short(found.id)} succeeded")
    for t, reason in said:
        click.echo(f"{short(t.id)} {reason}")


def _why(client: Client, task: Task) -> str:
    if task.status in ("failed", "killed"):
        attempt = f"attempt {task.attempts} of {task.max_attempts}"
        return f"{task.status} ({attempt}): {why_failed(client, task.id)}"
    return explain(task)


__all__ = [
    "drain",
    "drain_now",
    "elastic_config",
    "elastic_options",
    "find_worker",
    "report_drain",
    "why",
]
