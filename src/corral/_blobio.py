"""Writing a stream of blob bytes to a new file and hashing it in the same pass.

Shared by the coordinator (uploads, bytes arriving on the event loop) and the worker (its
cache's downloads, bytes arriving in a thread of their own). Batches of bytes are hashed in
one thread and written in another while the next batch arrives, so the network, the hash and
the disk overlap and each byte is read once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["TooLarge", "write_hashed", "write_hashed_sync"]

# Bytes gathered before a batch goes to the threads: big enough that the thread hop is cheap,
# small enough that a download holds little memory (at most about two batches).
_BATCH = 4 << 20
_IOV_MAX = 1024
_INLINE = 256 << 10
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class TooLarge(Exception):
    """The stream went past the byte limit it was given."""


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write every byte of chunks to fd, in order (writev, resumed after a short write)."""
    views = [memoryview(c) for c in chunks if c]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        done = 0
        while done < len(views) and written >= len(views[done]):
            written -= len(views[done])
            done += 1
        del views[:done]
        if written:
            views[0] = views[0][written:]


def _hash(digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)  # hashlib drops the GIL for buffers this big


class _Sink:
    """A new file at dest and the hash of what goes into it. Batches are hashed and written
    in two threads of the sink's own, each taking them in order; at most one batch is being
    processed while the caller gathers the next."""

    def __init__(self, dest: Path, limit: int | None) -> None:
        self.fd = os.open(dest, _NEW, 0o600)
        self.digest = hashlib.sha256()
        self.size = 0
        self._limit = limit
        self._batch: list[bytes] = []
        self._held = 0
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-hash")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-write")
        self._pending: list[Future[None]] = []

    def add(self, chunk: bytes) -> list[bytes] | None:
        """Take a chunk; a full batch, when there is one to hand over."""
        self.size += len(chunk)
        if self._limit is not None and self.size > self._limit:
            raise TooLarge(f"more than {self._limit} bytes")
        self._batch.append(chunk)
        self._held += len(chunk)
        if self._held < _BATCH:
            return None
        batch, self._batch, self._held = self._batch, [], 0
        return batch

    def rest(self) -> list[bytes] | None:
        """At the end: the last batch to hand over, or None once written here (small blobs:
        cheaper than two thread hops)."""
        if self.size > _INLINE:
            return self._batch
        _hash(self.digest, self._batch)
        _write_all(self.fd, self._batch)
        return None

    def submit(self, batch: list[bytes]) -> list[Future[None]]:
        """Start on a batch (the previous one must be done)."""
        self._pending = [
            self._hasher.submit(_hash, self.digest, batch),
            self._writer.submit(_write_all, self.fd, batch),
        ]
        return self._pending

    def close(self) -> None:
        """Stop the threads; close the file at once, or when a write still running (after a
        cancel, say) ends: by then its number could belong to another file."""
        for pool in (self._hasher, self._writer):
            pool.shutdown(wait=False, cancel_futures=True)
        if self._pending:
            self._pending[-1].add_done_callback(lambda _: os.close(self.fd))
        else:
            os.close(self.fd)


async def write_hashed(
    chunks: AsyncIterable[bytes], dest: Path, limit: int | None = None
) -> tuple[str, int]:
    """Write chunks to a new file at dest (mode 0600); return (sha256 hex, size) of what was
    written. Raises TooLarge once more than `limit` bytes arrive; dest is left for the caller
    to remove on any error."""
    sink = _Sink(dest, limit)
    running: list[Future[None]] = []
    try:
        async for chunk in chunks:
            if (batch := sink.add(chunk)) is not None:
                for future in running:
                    await asyncio.wrap_future(future)
                running = sink.submit(batch)
        for future in running:
            await asyncio.wrap_future(future)
        if (batch := sink.rest()) is not None:
            for future in sink.submit(batch):
                await asyncio.wrap_future(future)
    finally:
        sink.close()
    return sink.digest.hexdigest(), sink.size


def write_hashed_sync(
    chunks: Iterable[bytes], dest: Path, limit: int | None = None
) -> tuple[str, int]:
    """`write_hashed` for a thread that reads the bytes itself (blocking)."""
    sink = _Sink(dest, limit)
    running: list[Future[None]] = []
    try:
        for chunk in chunks:
            if (batch := sink.add(chunk)) is not None:
                for future in running:
                    future.result()
                running = sink.submit(batch)
        for future in running:
            future.result()
        if (batch := sink.rest()) is not None:
            for future in sink.submit(batch):
                future.result()
    finally:
        sink.close()
    return sink.digest.hexdigest(), sink.size
