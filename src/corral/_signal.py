"""A broadcast wake-up for asyncio code on both sides of the wire (coordinator and worker)."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Broadcast"]


class Broadcast:
    """Everyone waiting when `fire` is called wakes once; later waiters wait for the next."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """Wait for the next `fire`, at most `timeout` seconds; whether it came."""
        # not asyncio.wait_for: on 3.11 it swallows a cancel that lands just after the event
        # was set, and then a loop waiting on it cannot be stopped
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
                return True
        return False
