"""Commands that act on a job or a task, whichever the id names: `logs`, `fetch`, `wait`,
`kill`. A job stands for all its tasks; a task for itself."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import BinaryIO

import click

from ..client import Client
from ._common import Fail, client_errors, json_option, make_client, print_json, server_options
from ._complete import complete_ids
from ._format import short
from ._ids import match_ids, task_ids
from ._watch import follow

STREAMS = ("stdout", "stderr")


def _copy(client: Client, task_id: str, stream: str, out: BinaryIO, keep_following: bool) -> None:
    offset = 0
    while True:
        # live output is a prefix of the final stream, so one offset serves both
        data, final = client.log(task_id, stream, offset)
        out.write(data)
        out.flush()
        offset += len(data)
        if final or (not data and not keep_following):
            return
        if not data:
            time.sleep(0.3)


@click.command()
@click.argument("ref", metavar="ID", shell_complete=complete_ids)
@click.option("--stdout", "stream", flag_value="stdout", help="Only stdout, with no header.")
@click.option("--stderr", "stream", flag_value="stderr", help="Only stderr, with no header.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the task finishes.")
@server_options
@client_errors
def logs(ref: str, stream: str | None, follow: bool, server: str | None, token: str | None) -> None:
    """Show a task's stdout then its stderr, each under a header (for a job, every task's)."""
    out = sys.stdout.buffer
    with make_client(server, token) as client:
        ids = task_ids(client, ref)
        if follow and len(ids) != 1:
            raise Fail("--follow follows one task; give a task id (or JOB/TASKNAME)")
        streams = (stream,) if stream else STREAMS
        for task_id in ids:
            for name in streams:
                if len(streams) > 1 or len(ids) > 1:
                    out.write(f"==> {name} of task {short(task_id)} <==\n".encode())
                _copy(client, task_id, name, out, follow)


@click.command()
@click.argument("ref", metavar="ID", shell_complete=complete_ids)
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="Directory.")
@click.option("--by-name", is_flag=True, help="Name folders by task name where names are unique.")
@json_option
@server_options
@client_errors
def fetch(
    ref: str, to: str, by_name: bool, as_json: bool, server: str | None, token: str | None
) -> None:
    """Write results to DIR/<task-id>/: returned files, stdout and stderr (for a job, every
    finished task's)."""
    with make_client(server, token) as client:
        written = client.fetch(match_ids(client, ref).id, Path(to), by_name)
    if as_json:
        return print_json([str(p) for p in written])
    click.echo(f"fetched {len(written)} task(s) into {to}")


@click.command()
@click.argument("ref", metavar="ID", shell_complete=complete_ids)
@json_option
@server_options
@client_errors
def wait(ref: str, as_json: bool, server: str | None, token: str | None) -> None:
    """Print a line as each task finishes, with the reason for each failure; exit 0 only if
    all succeeded (for a task id, that task)."""
    with make_client(server, token) as client:
        found = match_ids(client, ref)
        only = found.id if found.kind == "task" else None
        raise SystemExit(follow(client, found.job_id, as_json, only=only))


@click.command()
@click.argument("ref", metavar="ID", shell_complete=complete_ids)
@click.option(
    "--checkpoint",
    is_flag=True,
    help="Running tasks get SIGTERM and their worker's grace period, their checkpoint is"
    " saved, then they end killed; `corral retry --killed` resumes them from it.",
)
@json_option
@server_options
@client_errors
def kill(ref: str, checkpoint: bool, as_json: bool, server: str | None, token: str | None) -> None:
    """Kill a job's tasks, or one task, with their whole process trees."""
    with make_client(server, token) as client:
        found = client.kill(match_ids(client, ref).id, checkpoint)
    if as_json:
        return print_json(found)
    live = found.status in ("queued", "running")
    click.echo(
        f"{short(found.id)} {found.status}" + (" (killed once checkpointed)" if live else "")
    )


__all__ = ["fetch", "kill", "logs", "wait"]
