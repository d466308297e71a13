"""The `corral` command line: thin, it parses, calls the client or a component, and prints."""

from __future__ import annotations

import click

from ._allow import allow
from ._checkpoint import checkpoint
from ._elastic import drain, why
from ._farm import server, up, worker
from ._jobs import ps, retry, show, workers
from ._mapreduce import mapreduce
from ._output import fetch, kill, logs, wait
from ._scale import scale
from ._security import audit, token
from ._submit import submit


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="corral")
def cli() -> None:
    """Corral: turn a pile of ordinary machines into one compute farm."""


for command in (
    *(up, server, worker, submit, ps, show, logs, fetch, wait, kill, retry, workers),
    *(why, drain),
):
    cli.add_command(command)


cli.add_command(allow)
cli.add_command(token)
cli.add_command(audit)
cli.add_command(scale)
cli.add_command(mapreduce)
cli.add_command(checkpoint)


def main() -> None:
    """Entry point of the `corral` console script."""
    cli()


__all__ = ["cli", "main"]
