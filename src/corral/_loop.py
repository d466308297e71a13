"""The event loop every Corral process runs on: uvloop when it is installed (uvicorn[standard]
brings it), else asyncio's own. Each request, lease and result costs less event-loop time
there (for the worker: handles, callbacks and its HTTP client's sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["new_event_loop", "run_async", "uses_uvloop"]

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def uses_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether `loop` is uvloop's (it watches child processes by itself)."""
    return type(loop).__module__.startswith("uvloop")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on `new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
