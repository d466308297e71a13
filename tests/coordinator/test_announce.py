"""Discovery without sockets: when a coordinator announces, where its beacons go, and which
beacons a worker believes."""

from __future__ import annotations

import pytest

from corral.coordinator.announce import Target, beacon_targets, should_announce
from corral.protocol import Beacon, decode_beacon, encode_beacon

IFACES = {
    "lo": [("127.0.0.1", "255.0.0.0")],
    "eth0": [("192.0.2.10", "255.255.255.0"), ("198.51.100.6", "255.255.255.252")],
    "tun0": [("203.0.113.5", "255.255.255.255")],  # point to point: no broadcast
}


@pytest.mark.parametrize(
    ("host", "flag", "expected"),
    [
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
        ("0.0.0.0", None, True),
        ("192.0.2.10", None, True),
        ("192.0.2.10", False, False),
        ("127.0.0.1", True, True),
    ],
)
def test_announces_by_default_only_beyond_loopback(
    host: str, flag: bool | None, expected: bool
) -> None:
    assert should_announce(host, flag) is expected


def test_wildcard_announces_on_every_broadcast_capable_interface_but_loopback() -> None:
    assert beacon_targets("0.0.0.0", 8470, "http", IFACES) == [
        Target("192.0.2.10", "192.0.2.255", "http://192.0.2.10:8470"),
        Target("198.51.100.6", "198.51.100.7", "http://198.51.100.6:8470"),
    ]


def test_one_address_announces_on_its_own_network_only() -> None:
    assert beacon_targets("192.0.2.10", 8443, "https", IFACES) == [
        Target("192.0.2.10", "192.0.2.255", "https://192.0.2.10:8443")
    ]
    assert beacon_targets("127.0.0.1", 8470, "http", IFACES) == [
        Target("127.0.0.1", "127.255.255.255", "http://127.0.0.1:8470")
    ]
    assert beacon_targets("203.0.113.5", 8470, "http", IFACES) == []
    assert beacon_targets("10.9.9.9", 8470, "http", IFACES) == []


def test_a_beacon_is_believed_only_from_the_address_it_names() -> None:
    data = encode_beacon(Beacon("http://192.0.2.10:8470", "farm"))
    assert decode_beacon(data, "192.0.2.10") == Beacon("http://192.0.2.10:8470", "farm")
    assert decode_beacon(data, "192.0.2.66") is None  # sent on someone else's behalf
    assert b"token" not in data


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"url": 3}',
        b'{"url": "ftp://192.0.2.10/"}',
        b'{"url": "http://192.0.2.10:8470", "service": "other"}',
        b'{"url": "http://[::1"}',
    ],
)
def test_garbage_is_not_a_beacon(data: bytes) -> None:
    assert decode_beacon(data, "192.0.2.10") is None
