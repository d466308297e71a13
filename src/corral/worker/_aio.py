"""Small asyncio helpers of the worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._loop import uses_uvloop
from .._signal import Broadcast

__all__ = ["Broadcast", "maybe_thread", "with_pidfd_watcher"]

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
