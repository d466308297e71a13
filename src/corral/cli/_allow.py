"""`corral allow add|list|remove`: the coordinator-wide executable allowlist."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

from ..client import Client, sha256_file
from ..worker.allowlist import parse_hash
from ._common import (
    Fail,
    client_errors,
    json_option,
    make_client,
    print_json,
    print_table,
    server_options,
)
from ._format import Column, ago, short
from ._ids import Candidate, choose


def program_hash(program: str) -> str:
    """The sha256 of `program`: `sha256:HEX`, or a file (a path, or a name on PATH) to hash."""
    if program.lower().startswith("sha256:"):
        try:
            return parse_hash(program)
        except ValueError as exc:
            raise Fail(str(exc)) from exc
    path = Path(program)
    if "/" not in program and not path.exists():
        found = shutil.which(program)
        if found is None:
            raise Fail(f"{program} is neither a file nor a program on PATH; or give sha256:HEX")
        path = Path(found)
    if not path.is_file():
        raise Fail(f"{program} is not a file; give a program file or sha256:HEX")
    return sha256_file(path.resolve())


@click.group()
def allow() -> None:
    """The programs workers that enforce an allowlist may run."""


@allow.command("add")
@click.argument("programs", nargs=-1, required=True)
@click.option("--note", default="", help="Why it is allowed (kept with the hash).")
@click.option(
    "--allow-inline",
    is_flag=True,
    help="An interpreter that may also run code not in a file: -c/-e code, stdin, --shell "
    "tasks, function tasks. Without it only scripts on the list run through it. "
    "Adding again without it takes that back.",
)
@json_option
@server_options
@client_errors
def add(
    programs: tuple[str, ...],
    note: str,
    allow_inline: bool,
    as_json: bool,
    server: str | None,
    token: str | None,
) -> None:
    """Allow programs and scripts: files to hash (paths or names on PATH) or sha256:HEX."""
    hashes = [(p, program_hash(p)) for p in programs]
    with make_client(server, token) as client:
        entries = [
            client.allow(sha, note or (p if not p.startswith("sha256:") else ""), allow_inline)
            for p, sha in hashes
        ]
    if as_json:
        return print_json(entries)
    for entry in entries:
        click.echo(
            f"sha256:{entry.sha256}" + (" (inline code allowed)" if entry.allow_inline else "")
        )


@allow.command("list")
@json_option
@server_options
@client_errors
def list_(as_json: bool, server: str | None, token: str | None) -> None:
    """Show the allowlist."""
    with make_client(server, token) as client:
        entries = client.allowed()
    if as_json:
        return print_json(entries)
    now = time.time()
    rows = [
        (short(e.sha256), e.note, "yes" if e.allow_inline else "", e.added_by, ago(e.added, now))
        for e in entries
    ]
    print_table(ALLOW_COLUMNS, rows)


ALLOW_COLUMNS = (
    Column("sha256"),
    Column("note", flex=True),
    Column("inline"),
    Column("added by", rank=2),
    Column("added", rank=1),
)


def _listed_hash(client: Client, program: str) -> str:
    """A hash on the list by `sha256:PREFIX` (as `allow list` shows them), else the program's."""
    prefix = program[7:].lower() if program.lower().startswith("sha256:") else ""
    if not prefix or len(prefix) == 64:
        return program_hash(program)
    found = [Candidate(e.sha256, "entry", e.note) for e in client.allowed()]
    return choose(prefix, found, "allowlist entry sha256:", "see `corral allow list`").id


@allow.command("remove")
@click.argument("programs", nargs=-1, required=True)
@server_options
@client_errors
def remove(programs: tuple[str, ...], server: str | None, token: str | None) -> None:
    """Take programs (files, sha256:HEX, or a prefix of 4 or more as `allow list` shows it)
    off the allowlist."""
    with make_client(server, token) as client:
        for sha in [_listed_hash(client, p) for p in programs]:
            client.disallow(sha)
            click.echo(f"removed sha256:{sha}")


__all__ = ["allow", "program_hash"]
