"""`corral worker` options for the sandbox, the allowlist and the network."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..worker.allowlist import parse_hash, read_allow_file
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
        type=click.Path(file_okay=False, path_type=Path),
        help="A directory tasks may read even inside a hidden one, e.g. ~/tools (repeatable).",
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
    return {
        "allow": hashes | inline,
        "allow_inline": inline,
        "allow_all": bool(options["allow_all"]),
        "enforce_allowlist": bool(options["enforce_allowlist"]),
        "allow_network": bool(options["allow_network"]),
        "sandbox": not options["no_sandbox"],
        "hide": tuple(p.resolve() for p in options["hide"]),
        "expose": tuple(p.resolve() for p in options["expose"]),
    }
