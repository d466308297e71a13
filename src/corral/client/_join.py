"""Join strings: one line that carries a coordinator's URL, its CA fingerprint and a token.

    corral1:<base64url of {"url": ..., "ca": <sha256 hex of the CA certificate (DER)>,
                           "token": ...}>

A joining worker fetches the CA certificate from the coordinator's unauthenticated /ca.pem,
keeps it only if its fingerprint matches, and then trusts nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from .._failover import SyncFailover, primary_url, split_urls
from ..protocol import JOIN_PREFIX, make_join
from ._errors import ConfigError, Unreachable

PREFIX = JOIN_PREFIX


@dataclass(frozen=True)
class Join:
    """What a join string carries."""

    url: str
    ca_sha256: str
    token: str


def pem_fingerprint(pem: bytes) -> str:
    """The sha256 (hex) of the first certificate in a PEM file, over its DER encoding."""
    try:
        der = ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not a PEM certificate: {exc}") from exc
    return hashlib.sha256(der).hexdigest()


def parse_join(text: str) -> Join:
    """Decode a join string; ConfigError when it is not one."""
    text = text.strip()
    if not text.startswith(PREFIX):
        raise ConfigError(f"a join string starts with {PREFIX!r}")
    body = text[len(PREFIX) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        join = Join(str(data["url"]), str(data["ca"]), str(data["token"]))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ConfigError("the join string is damaged; copy it again") from exc
    if not join.url.startswith("https://"):
        raise ConfigError("the join string's URL is not https")
    return join


def fetch_pinned_ca(url: str, ca_sha256: str, timeout: float = 10.0) -> bytes:
    """The coordinator's CA certificate, only if it has the expected fingerprint; from the
    first coordinator of a list (`URL1,URL2`) that answers (they share one CA)."""
    transport = SyncFailover(split_urls(url), httpx.HTTPTransport(verify=False))
    try:
        # not trusted yet: what makes it trustworthy is the fingerprint check below
        with httpx.Client(transport=transport, timeout=timeout) as client:
            response = client.get(primary_url(url) + "/ca.pem")
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot reach the coordinator at {url}: {exc}") from exc
    if response.status_code != 200:
        raise ConfigError(f"{url} serves no CA certificate (HTTP {response.status_code})")
    found = pem_fingerprint(response.content)
    if found != ca_sha256:
        raise ConfigError(
            f"the coordinator at {url} presents CA {found[:16]}..., not the pinned "
            f"{ca_sha256[:16]}...: wrong coordinator, or someone in between"
        )
    return response.content


def save_pinned_ca(url: str, ca_sha256: str, dest: Path) -> Path:
    """Fetch, check and write the pinned CA certificate to `dest`."""
    pem = fetch_pinned_ca(url, ca_sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(pem)
    return dest


__all__ = [
    "PREFIX",
    "Join",
    "fetch_pinned_ca",
    "make_join",
    "parse_join",
    "pem_fingerprint",
    "save_pinned_ca",
]
