"""`corral worker` options for the sandbox, the allowlist and the network."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..worker.allowlist import parse_hash, read_allow_file
from ..worker.taskuser import TaskUsers
from ._common import Fail

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option(
        "--allow",
        "allow",
        multiple=True,
        metavar="sha256:HEX",
        help="Allow the program with this hash (repeatable); implies an enforced allowlist.",
    ),
    click.option(
        "--allow-inline",
        "allow_inline",
        multiple=True,
        metavar="sha256:HEX",
        help="Allow this interpreter to run code not in a file too (-c, -e, shell lines).",
    ),
    click.option(
        "--allow-file",
        "allow_files",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="A file of sha256:HEX lines to allow, `inline sha256:HEX` for --allow-inline.",
    ),
    click.option(
        "--allow-all",
        is_flag=True,
        help="Run any program (the default on a loopback coordinator).",
    ),
    click.option(
        "--enforce-allowlist",
        is_flag=True,
        help="Only run allowed programs, even on a loopback coordinator.",
    ),
    click.option(
        "--allow-network",
        is_flag=True,
        help="Give tasks that ask for it (requires network=yes) the network.",
    ),
    click.option(
        "--no-sandbox",
        is_flag=True,
        help="Do not use bubblewrap even when it is installed.",
    ),
    click.option(
        "--sandbox-hide",
        "hide",
        multiple=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Another directory tasks must not see (repeatable).",
    ),
    click.option(
        "--sandbox-expose",
        "expose",
        multiple=True,
        metavar="DIR[:ro|rw]",
        help="A directory tasks see (read-only, or read-write with :rw), e.g. ~/tools "
        "(repeatable). Tasks otherwise see only the system, their own directory and /tmp.",
    ),
    click.option(
        "--task-uids",
        metavar="START-END",
        default=None,
        help="A root worker runs each task as its own uid from this range, which no account "
        "may own [default: 60000-60999].",
    ),
    click.option(
        "--task-user",
        metavar="NAME",
        default=None,
        help="A root worker runs every task as this account instead of one uid per task.",
    ),
]


def policy_options(fn: F) -> F:
    """The sandbox and allowlist options of `corral worker`."""
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


def policy_config(options: dict[str, Any]) -> dict[str, Any]:
    """WorkerConfig fields from the parsed policy options; bad hashes or files fail in one line."""
    hashes: set[str] = set()
    inline: set[str] = set()
    try:
        for value in options["allow"]:
            hashes.add(parse_hash(value))
        for value in options["allow_inline"]:
            inline.add(parse_hash(value))
        for path in options["allow_files"]:
            listed, marked = read_allow_file(path)
            hashes |= listed
            inline |= marked
    except OSError as exc:
        raise Fail(f"cannot read --allow-file {exc.filename}: {exc.strerror}") from exc
    except ValueError as exc:
        raise Fail(f"--allow: {exc}") from exc
    if options["allow_all"] and (hashes or inline or options["enforce_allowlist"]):
        raise Fail("--allow-all contradicts --allow, --allow-file and --enforce-allowlist")
    ro, rw = _exposed(options["expose"])
    uids = _uid_range(options["task_uids"])
    if uids and options["task_user"]:
        raise Fail("--task-uids contradicts --task-user")
    try:  # checked now, so a bad range fails before the worker starts
        TaskUsers.choose(uids, options["task_user"], root=os.geteuid() == 0)
    except ValueError as exc:
        raise Fail(str(exc)) from exc
    return {
        "allow": hashes | inline,
        "allow_inline": inline,
        "allow_all": bool(options["allow_all"]),
        "enforce_allowlist": bool(options["enforce_allowlist"]),
        "allow_network": bool(options["allow_network"]),
        "sandbox": not options["no_sandbox"],
        "hide": tuple(p.resolve() for p in options["hide"]),
        "expose": ro,
        "expose_rw": rw,
        "task_uids": uids,
        "task_user": options["task_user"],
    }


def _exposed(items: tuple[str, ...]) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """--sandbox-expose DIR[:ro|rw] items as (read-only, read-write) directories."""
    ro: list[Path] = []
    rw: list[Path] = []
    for item in items:
        path, sep, mode = item.rpartition(":")
        if not sep or mode not in ("ro", "rw"):
            path, mode = item, "ro"  # a plain DIR (which may hold a colon itself)
        where = Path(path).expanduser().resolve()
        if not where.is_dir():
            raise Fail(f"--sandbox-expose {item}: not a directory")
        (rw if mode == "rw" else ro).append(where)
    return tuple(ro), tuple(rw)


def _uid_range(value: str | None) -> tuple[int, int] | None:
    """--task-uids START-END as two ints."""
    if value is None:
        return None
    first, sep, last = value.partition("-")
    if not (sep and first.isdigit() and last.isdigit()):
        raise Fail(f"--task-uids {value}: expected START-END, e.g. 60000-60999")
    return int(first), int(last)
