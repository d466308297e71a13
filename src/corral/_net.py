"""One answer to "does this host name this machine?", for the coordinator and the worker alike.

Loopback means: an address in 127.0.0.0/8, ::1, or an IPv4-mapped ::ffff:127.x; or the name
`localhost` or any `*.localhost`, in any case, with or without a trailing dot. RFC 6761 reserves
the `localhost` names for loopback, so no resolver may send them elsewhere; that is what lets a
security check (plain HTTP allowed, allowlist off) trust a name without resolving it.

Rejected: `localhost.localdomain` and other /etc/hosts aliases. They usually mean loopback, but
only because a file says so; a name that could point at the network must not turn off TLS.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["is_loopback", "is_loopback_url"]


def is_loopback(host: str) -> bool:
    """Whether `host` (a name, an address, or `[v6]` as in a URL) is this machine's loopback."""
    text = host.strip().removeprefix("[").removesuffix("]")
    labels = text.lower().removesuffix(".").split(".")
    if labels[-1] == "localhost" and all(labels):  # no empty label, as in ".localhost"
        return True
    try:
        address = ipaddress.ip_address(text)
    except ValueError:  # another name, or "" for every address
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # Python 3.11 says ::ffff:127.0.0.1 is not loopback
    return address.is_loopback


def is_loopback_url(urls: str) -> bool:
    """Whether a coordinator URL, or every URL of a comma-separated list, names this machine:
    one URL on the network is enough to count the list as the network's."""
    hosts = [urlsplit(u.strip()).hostname or "" for u in urls.split(",") if u.strip()]
    return bool(hosts) and all(is_loopback(h) for h in hosts)
