"""Writing a stream of blob bytes to a new file and hashing it in the same pass.

Shared by the coordinator (uploads) and the worker (its cache's downloads). The bytes arrive on
the event loop; batches of them are hashed and written in a thread while the next batch
arrives, so the network, the hash and the disk overlap and each byte is touched once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["TooLarge", "write_hashed"]

# Bytes gathered before a batch goes to the thread: big enough that the thread hop is cheap,
# small enough that a download holds little memory (at most about two batches).
_BATCH = 4 << 20
_IOV_MAX = 1024
_INLINE = 256 << 10


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


def _consume(fd: int, digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)  # hashlib drops the GIL for buffers this big
    _write_all(fd, chunks)


async def write_hashed(
    chunks: AsyncIterable[bytes], dest: Path, limit: int | None = None
) -> tuple[str, int]:
    """Write chunks to a new file at dest (mode 0600); return (sha256 hex, size) of what was
    written. Raises TooLarge once more than `limit` bytes arrive; dest is left for the caller
    to remove on any error."""
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(dest, flags, 0o600)
    # One thread per stream runs the batches in order; at most one batch waits for it.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-blob")
    last: Future[None] | None = None
    size = 0
    try:
        batch: list[bytes] = []
        held = 0
        async for chunk in chunks:
            size += len(chunk)
            if limit is not None and size > limit:
                raise TooLarge(f"more than {limit} bytes")
            batch.append(chunk)
            held += len(chunk)
            if held >= _BATCH:
                if last is not None:
                    await asyncio.wrap_future(last)
                last = pool.submit(_consume, fd, digest, batch)
                batch, held = [], 0
        if last is None and held <= _INLINE:
            _consume(fd, digest, batch)  # small blobs: cheaper than a thread
        else:
            last = pool.submit(_consume, fd, digest, batch)
            await asyncio.wrap_future(last)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        # never close fd under a write still running (after a cancel, say): the number
        # could be reused for another file by then
        if last is None:
            os.close(fd)
        else:
            last.add_done_callback(lambda _: os.close(fd))
    return digest.hexdigest(), size
