"""Small asyncio helpers of the worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from .._loop import uses_uvloop
from .._signal import Broadcast

__all__ = ["Broadcast", "Sweeper", "maybe_thread", "with_pidfd_watcher"]

T = TypeVar("T")


async def maybe_thread(slow: bool, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a thread when it may be slow, else right here (a thread hop costs more
    than hashing a small file or listing an empty directory)."""
    return await asyncio.to_thread(fn, *args) if slow else fn(*args)


async def with_pidfd_watcher(main: Awaitable[None]) -> None:
    # Python 3.11 waits for each task process in a thread of its own; a pidfd in the event
    # loop costs less per task (3.12 and later do this by themselves, as uvloop does)
    loop = asyncio.get_running_loop()
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open") and not uses_uvloop(loop):
        with contextlib.suppress(OSError):
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(loop)
            asyncio.set_child_watcher(watcher)
    await main


class Sweeper:
    """Deletes directories (finished tasks') in a thread, off the event loop: all those asked
    for while the last sweep ran go in one thread hop, which costs more than removing a
    finished task's few files."""

    def __init__(self) -> None:
        self._queue: list[Path] = []
        self._running: asyncio.Future[None] | None = None

    def remove(self, path: Path) -> None:
        """Delete `path` and everything under it soon (following no symlink)."""
        self._queue.append(path)
        if self._running is None:
            self._running = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await asyncio.to_thread(_remove_all, batch)
        finally:
            self._running = None

    async def wait(self) -> None:
        """Until everything asked for is gone."""
        while self._running is not None:
            await asyncio.shield(self._running)


def _remove_all(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
