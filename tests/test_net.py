"""The one loopback test shared by the coordinator (TLS, discovery) and the worker (allowlist)."""

from __future__ import annotations

import pytest

from corral._net import is_loopback

LOOPBACK = [
    "127.0.0.1",
    "127.1.2.3",
    "127.255.255.255",
    "::1",
    "[::1]",
    "0:0:0:0:0:0:0:1",
    "::1%lo",
    "::ffff:127.0.0.1",
    "::FFFF:127.9.9.9",
    "localhost",
    "LOCALHOST",
    "LocalHost.",
    "farm.localhost",
    "a.b.LOCALHOST",
    " localhost ",
]
NOT_LOOPBACK = [
    "",
    "0.0.0.0",
    "::",
    "10.0.0.1",
    "128.0.0.1",
    "126.255.255.255",
    "::2",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible (deprecated), not mapped: not the loopback
    "example.org",
    "localhost.localdomain",  # an /etc/hosts alias, not a reserved name
    "localhost.example.org",
    "notlocalhost",
    "xlocalhost",
    ".localhost.evil",
    ".localhost",
    "a..localhost",
    "[localhost]x",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_not_loopback(host: str) -> None:
    assert not is_loopback(host)
