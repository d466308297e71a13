"""Discovery, the worker's side: listen for a coordinator's UDP beacon and take its URL."""

from __future__ import annotations

import logging
import socket
import time

from ..protocol import BEACON_PORT, Beacon, decode_beacon

__all__ = ["DiscoveryTimeout", "discover"]

log = logging.getLogger("corral.worker")


class DiscoveryTimeout(Exception):
    """No coordinator announced itself in time."""


def discover(port: int = BEACON_PORT, timeout: float | None = None) -> Beacon:
    """Wait for the first valid beacon on UDP `port` (all interfaces) and return it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # several workers on one machine all hear every broadcast
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("", port))
        log.info("listening for a coordinator's beacon on UDP port %d", port)
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DiscoveryTimeout(f"no coordinator announced itself on UDP port {port}")
            s.settimeout(min(left, 1.0) if left is not None else 1.0)
            try:
                data, (sender, _) = s.recvfrom(4096)
            except TimeoutError:
                continue
            beacon = decode_beacon(data, sender)
            if beacon is not None:
                return beacon
            log.info("ignored a datagram from %s that is not a valid beacon", sender)
