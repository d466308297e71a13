"""Writing a stream to a file while hashing it (used by coordinator uploads and the worker
cache's downloads)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from corral import _blobio
from corral._blobio import TooLarge, write_hashed, write_hashed_sync


async def stream(chunks: list[bytes], fail_after: int | None = None) -> AsyncIterator[bytes]:
    for chunk in blocking(chunks, fail_after):
        yield chunk


def blocking(chunks: list[bytes], fail_after: int | None = None) -> Iterator[bytes]:
    for i, chunk in enumerate(chunks):
        if i == fail_after:
            raise ConnectionError("peer went away")
        yield chunk


def write(
    how: str, chunks: list[bytes], dest: Path, limit: int | None = None, fail: int | None = None
) -> tuple[str, int]:
    """write_hashed (bytes from the event loop) or write_hashed_sync (from a thread)."""
    if how == "sync":
        return write_hashed_sync(blocking(chunks, fail), dest, limit)
    return asyncio.run(write_hashed(stream(chunks, fail), dest, limit))


both = pytest.mark.parametrize("how", ["async", "sync"])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@both
@pytest.mark.parametrize("sizes", [[], [10], [1000] * 3, [65536] * 200, [1 << 20, 7, 3 << 20]])
def test_writes_every_byte_in_order_and_hashes_it(
    tmp_path: Path, sizes: list[int], how: str
) -> None:
    chunks = [os.urandom(n) for n in sizes]  # 200 x 64 KiB: several batches go to the threads
    data = b"".join(chunks)
    dest = tmp_path / "out"
    digest, size = write(how, chunks, dest)
    assert dest.read_bytes() == data
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert dest.stat().st_mode & 0o777 == 0o600


@both
def test_short_writes_are_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    real = os.writev

    def short(fd: int, buffers: list[memoryview]) -> int:
        return real(fd, [buffers[0][:1000]])  # at most 1000 bytes a call

    monkeypatch.setattr(_blobio.os, "writev", short)
    chunks = [os.urandom(3000), os.urandom(500), os.urandom(2500)] * 100  # in the threads too
    dest = tmp_path / "out"
    write(how, chunks, dest)
    assert dest.read_bytes() == b"".join(chunks)


@both
def test_limit_stops_the_stream(tmp_path: Path, how: str) -> None:
    with pytest.raises(TooLarge):
        write(how, [b"x" * 600, b"y" * 600], tmp_path / "out", limit=1000)


@both
@pytest.mark.parametrize("fail_after", [1, 100])
def test_a_failing_stream_closes_the_file(tmp_path: Path, fail_after: int, how: str) -> None:
    before = open_fds()
    with pytest.raises(ConnectionError):
        write(how, [os.urandom(65536)] * 150, tmp_path / "out", fail=fail_after)
    for _ in range(100):  # a batch still being written closes the file when it is done
        if open_fds() <= before:
            break
        time.sleep(0.01)
    assert open_fds() <= before


@both
def test_refuses_to_write_through_an_existing_file(tmp_path: Path, how: str) -> None:
    dest = tmp_path / "out"
    dest.write_bytes(b"there already")
    with pytest.raises(FileExistsError):
        write(how, [b"new"], dest)
    assert dest.read_bytes() == b"there already"
