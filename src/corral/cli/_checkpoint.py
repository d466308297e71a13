"""`corral checkpoint`: inside a running task, have the worker save its checkpoint now."""

from __future__ import annotations

import click

from ..checkpoint import CheckpointError, request
from ._common import FailedWork


@click.command()
@click.option(
    "--timeout",
    type=click.FloatRange(0.1),
    default=600.0,
    show_default=True,
    help="Seconds to wait for the worker to record it.",
)
def checkpoint(timeout: float) -> None:
    """Save this task's checkpoint (what $CORRAL_CHECKPOINT_DIR holds) and wait until it is
    recorded; exit 1 if it was not."""
    try:
        n = request(timeout)
    except (CheckpointError, OSError) as exc:
        raise FailedWork(f"checkpoint: {exc}") from exc
    click.echo(f"checkpoint {n} saved" if n else "checkpoint directory empty: nothing saved")
