"""The discovery beacon a coordinator broadcasts on its LAN (UDP, one JSON datagram).

It names the coordinator's URL and nothing secret: workers still need a token. A worker only
believes a beacon whose URL names the address the datagram came from, so a beacon cannot
send workers (and their tokens) to some third machine.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

BEACON_PORT = 8471
_SERVICE = "corral"


class Beacon(msgspec.Struct, omit_defaults=True):
    """`url` is where the coordinator's API is; `name` is its host name, for people."""

    url: str
    name: str = ""
    service: str = _SERVICE
    version: int = 1


def encode_beacon(beacon: Beacon) -> bytes:
    """The datagram for a beacon."""
    return msgspec.json.encode(beacon)


def decode_beacon(data: bytes, sender: str) -> Beacon | None:
    """The beacon in a datagram from address `sender`, or None if it is not a valid one."""
    try:
        beacon = msgspec.json.decode(data, type=Beacon)
        parts = urlsplit(beacon.url)
        host = parts.hostname
    except (msgspec.DecodeError, ValueError):
        return None
    if beacon.service != _SERVICE or parts.scheme not in ("http", "https") or host != sender:
        return None
    return beacon


__all__ = ["BEACON_PORT", "Beacon", "decode_beacon", "encode_beacon"]
