"""Options for desktop grids: `corral worker --when-idle/--discover`, `corral server
--announce`."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..coordinator.announce import Target, beacon_targets, local_interfaces, should_announce
from ..protocol import BEACON_PORT
from ..worker.discover import DiscoveryTimeout, discover
from ..worker.idle import IdlePolicy
from ._common import Fail, FailedWork

F = TypeVar("F", bound=Callable[..., Any])

_PORT = click.IntRange(1, 65535)

_WORKER_OPTIONS = [
    click.option(
        "--when-idle",
        is_flag=True,
        help="Desktop mode: run tasks only while other processes leave the CPU idle; "
        "suspend them when the owner is back.",
    ),
    click.option(
        "--idle-threshold",
        type=click.FloatRange(0, 100),
        default=25.0,
        show_default=True,
        metavar="PCT",
        help="With --when-idle: other processes' CPU use (percent of all cores) above which "
        "the machine is busy.",
    ),
    click.option(
        "--idle-grace",
        type=click.FloatRange(0),
        default=300.0,
        show_default=True,
        metavar="SECONDS",
        help="With --when-idle: give suspended tasks back to the queue after this long busy.",
    ),
    click.option(
        "--discover",
        is_flag=True,
        help="Find the coordinator on the local network by its UDP beacon (no --server).",
    ),
    click.option(
        "--discover-port",
        type=_PORT,
        default=BEACON_PORT,
        show_default=True,
        help="UDP port to listen on for beacons.",
    ),
    click.option(
        "--discover-timeout",
        type=click.FloatRange(0),
        default=None,
        metavar="SECONDS",
        help="Give up (exit 1) if no beacon is heard in this long [default: wait].",
    ),
]


def desktop_worker_options(fn: F) -> F:
    """The worker's --when-idle, --idle-* and --discover* options."""
    for option in reversed(_WORKER_OPTIONS):
        fn = option(fn)
    return fn


def desktop_config(options: dict[str, Any]) -> dict[str, Any]:
    """WorkerConfig fields from the options (taking them out of `options`)."""
    when_idle = options.pop("when_idle", False)
    threshold = options.pop("idle_threshold", 25.0)
    grace = options.pop("idle_grace", 300.0)
    return {"when_idle": IdlePolicy(threshold, grace) if when_idle else None}


def discovered_server(server: str | None, options: dict[str, Any]) -> str | None:
    """`server`, or with --discover (and no --server) the URL a coordinator announces."""
    wanted = options.pop("discover", False)
    port = options.pop("discover_port", BEACON_PORT)
    timeout = options.pop("discover_timeout", None)
    if not wanted or server or options.get("join"):  # a URL given wins over a beacon
        return server
    click.echo(f"waiting for a coordinator's beacon on UDP port {port}", err=True)
    try:
        beacon = discover(port, timeout)
    except DiscoveryTimeout as exc:
        raise FailedWork(str(exc)) from exc
    except OSError as exc:
        raise FailedWork(f"cannot listen on UDP port {port}: {exc.strerror}") from exc
    click.echo(f"found coordinator {beacon.name or '?'} at {beacon.url}", err=True)
    return beacon.url


_SERVER_OPTIONS = [
    click.option(
        "--announce/--no-announce",
        default=None,
        help="Broadcast this coordinator's URL for `corral worker --discover` "
        "[default: only when listening on a non-loopback address].",
    ),
    click.option(
        "--announce-port",
        type=_PORT,
        default=BEACON_PORT,
        show_default=True,
        help="UDP port the beacons go to.",
    ),
]


def announce_options(fn: F) -> F:
    """The server's --announce/--no-announce and --announce-port options."""
    for option in reversed(_SERVER_OPTIONS):
        fn = option(fn)
    return fn


def announce_targets(host: str, port: int, scheme: str, options: dict[str, Any]) -> list[Target]:
    """Where to send beacons (none unless announcing); takes the options out of `options`."""
    if not should_announce(host, options.pop("announce", None)):
        return []
    try:
        addr = host if host in ("", "0.0.0.0") else socket.gethostbyname(host)
    except OSError as exc:
        raise Fail(f"--announce: cannot resolve {host}: {exc}") from exc
    targets = beacon_targets(addr, port, scheme, local_interfaces())
    if not targets:
        click.echo(f"not announcing: no IPv4 broadcast address for {host}", err=True)
    return targets


__all__ = [
    "announce_options",
    "announce_targets",
    "desktop_config",
    "desktop_worker_options",
    "discovered_server",
]
