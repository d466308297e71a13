"""`corral scale`: what the autoscaler runs, what it started lately, and why (admin)."""

from __future__ import annotations

import time

import click

from ..protocol import LaunchInfo, ScaleProviderInfo, ScaleStatus
from ._common import (
    client_errors,
    json_option,
    make_client,
    print_json,
    print_table,
    server_options,
)
from ._format import Column, ago

PROVIDER_COLUMNS = (
    Column("provider"),
    Column("running"),
    Column("launching"),
    Column("min"),
    Column("max"),
    Column("offers", flex=True),
    Column("launched", rank=1),
    Column("failed", rank=1),
    Column("idle timeout", rank=2),
)
LAUNCH_COLUMNS = (
    Column("launch"),
    Column("state"),
    Column("started"),
    Column("handle", rank=2),
    Column("note", rank=1, flex=True),
)


def _offers(p: ScaleProviderInfo) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(p.labels.items()))
    return f"{p.slots} slot{'s' * (p.slots != 1)}" + (f"; {labels}" if labels else "")


def provider_rows(status: ScaleStatus) -> list[tuple[object, ...]]:
    """`corral scale`'s provider table."""
    return [
        (p.name, p.running, p.launching, p.min, p.max, _offers(p), p.launched, p.failed)
        + (f"{p.idle_timeout:g} s",)
        for p in status.providers
    ]


def launch_rows(launches: list[LaunchInfo], now: float) -> list[tuple[object, ...]]:
    """`corral scale`'s recent launches, newest first."""
    return [(x.id, x.state, ago(x.started, now), x.handle or "", x.error or "") for x in launches]


@click.command()
@click.option("--limit", type=click.IntRange(1), default=10, show_default=True, help="Launches.")
@json_option
@server_options
@client_errors
def scale(limit: int, as_json: bool, server: str | None, token: str | None) -> None:
    """The autoscaler: its providers (limits, workers running and launching), recent
    launches and failures, and why it decided what it did last (admin)."""
    with make_client(server, token) as client:
        status = client.scale()
    if as_json:
        print_json(status)
        return
    now = time.time()
    if not status.leader and status.providers:
        click.echo("this coordinator waits: another one runs the autoscaler")
    if status.providers:
        print_table(PROVIDER_COLUMNS, provider_rows(status))
    if status.launches:
        click.echo()
        print_table(LAUNCH_COLUMNS, launch_rows(status.launches[:limit], now))
    when = f" ({ago(status.decided, now)})" if status.decided else ""
    if status.providers:
        click.echo(f"\nlast decision{when}:")
    for reason in status.reasons or ["nothing to do"]:
        click.echo(f"  {reason}" if status.providers else reason)


__all__ = ["launch_rows", "provider_rows", "scale"]
