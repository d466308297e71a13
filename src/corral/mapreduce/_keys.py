"""Keys: which values may be keys, their stable partition, and the one order they sort in.

A key is a str, int, float, bool, None, or a tuple of these. Its partition comes from a
CRC-32 of its msgpack encoding, so the same key goes to the same reducer in every process
and every run (Python's `hash()` is salted per process and cannot be used). Keys sort by
`order`: numbers before strings before tuples (None first), and within a kind by value, so
keys of mixed kinds still have one order and every part of the output is sorted the same way
on the submitter and on any worker.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

__all__ = ["BadKey", "check_key", "order", "partition"]

_encode = msgspec.msgpack.Encoder().encode
_SCALARS = (str, int, float)


class BadKey(TypeError):
    """A value that cannot be a key."""


def check_key(key: Any) -> None:
    """Raise BadKey when `key` is not a str, int, float, bool, None or tuple of these."""
    if key is None or type(key) in _SCALARS or isinstance(key, bool):
        return
    if type(key) is tuple:
        for part in key:
            check_key(part)
        return
    raise BadKey(
        f"key {key!r} ({type(key).__name__}) cannot be a key: keys are str, int, float, "
        "bool, None or tuples of these, so they serialise and sort the same everywhere"
    )


def partition(key: Any, reducers: int) -> int:
    """The reducer a (checked) key goes to: stable across processes, machines and runs."""
    return zlib.crc32(_encode(key)) % reducers


def order(key: Any) -> tuple[Any, ...]:
    """The sort key of a key: (kind, value), tuples element by element."""
    kind = type(key)
    if kind is str:
        return (2, key)
    if key is None:
        return (0, 0)
    if kind is tuple:
        return (3, tuple(order(part) for part in key))
    return (1, key)
