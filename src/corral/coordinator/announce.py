"""Discovery: a coordinator on a LAN announces its URL with a UDP broadcast every second.

A coordinator announces by default only when it listens on a non-loopback address (a farm
on one machine has nothing to announce); `--announce` forces it (on a loopback address the
beacon goes to 127.255.255.255, for workers on the same machine), `--no-announce` stops it.
Each beacon goes out from the interface's own address to that interface's broadcast
address and names the URL reachable from that network; listening on 0.0.0.0 announces on
every interface with an IPv4 broadcast address. The token is never in a beacon.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psutil
import uvicorn

from .._net import is_loopback
from ..protocol import BEACON_PORT, Beacon, encode_beacon

__all__ = [
    "Target",
    "beacon_targets",
    "local_interfaces",
    "serve_announced",
    "should_announce",
]

log = logging.getLogger("corral.coordinator")

# interface name -> its IPv4 addresses as (address, netmask)
Interfaces = Mapping[str, Sequence[tuple[str, str]]]


@dataclass(frozen=True)
class Target:
    """Where one beacon goes: from `source` to `broadcast`, naming `url`."""

    source: str
    broadcast: str
    url: str


def should_announce(host: str, flag: bool | None) -> bool:
    """Whether to announce: as told, else only when listening beyond loopback."""
    return flag if flag is not None else not is_loopback(host)


def _broadcast(addr: str, netmask: str) -> str | None:
    # from the netmask, not the interface's brd: without one, getifaddrs reports the
    # address itself there
    net = ipaddress.ip_network(f"{addr}/{netmask}", strict=False)
    return None if net.prefixlen >= 31 else str(net.broadcast_address)


def beacon_targets(host: str, port: int, scheme: str, interfaces: Interfaces) -> list[Target]:
    """The beacons for a coordinator listening on `host:port` (IPv4 only)."""
    wildcard = host in ("", "0.0.0.0")
    wanted = "127.0.0.1" if host.lower() == "localhost" else host
    out = []
    for addrs in interfaces.values():
        for addr, netmask in addrs:
            if wildcard and is_loopback(addr) or not wildcard and addr != wanted:
                continue
            to = _broadcast(addr, netmask)
            if to:
                out.append(Target(addr, to, f"{scheme}://{addr}:{port}"))
    return out


def local_interfaces() -> dict[str, list[tuple[str, str]]]:
    """This machine's IPv4 addresses by interface."""
    return {
        name: [
            (a.address, a.netmask or "255.255.255.255") for a in addrs if a.family == socket.AF_INET
        ]
        for name, addrs in psutil.net_if_addrs().items()
    }


def _send(targets: Sequence[Target], port: int, name: str) -> None:
    for t in targets:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            try:
                s.bind((t.source, 0))
                s.sendto(encode_beacon(Beacon(t.url, name)), (t.broadcast, port))
            except OSError as exc:  # an interface went away; the next round may work
                log.debug("beacon to %s failed: %s", t.broadcast, exc)


async def _announce(
    targets: Sequence[Target], port: int, ready: Callable[[], bool], interval: float
) -> None:
    name = socket.gethostname()
    while True:
        if ready():
            await asyncio.to_thread(_send, targets, port, name)
        await asyncio.sleep(interval if ready() else 0.05)


async def serve_announced(
    server: uvicorn.Server,
    targets: Sequence[Target],
    port: int = BEACON_PORT,
    interval: float = 1.0,
) -> None:
    """Serve, announcing on `targets` (once the server has started) until it stops."""
    if not targets:
        return await server.serve()
    for t in targets:
        log.warning("announcing %s on %s:%d (UDP)", t.url, t.broadcast, port)
    beacons = asyncio.create_task(_announce(targets, port, lambda: server.started, interval))
    try:
        await server.serve()
    finally:
        beacons.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beacons
