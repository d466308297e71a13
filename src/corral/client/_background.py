"""Background: a thread running an event loop with an AsyncClient and its Dispatcher.

The sync Client, JobClient and Executor hand out concurrent.futures; this thread settles
them, so sync code gets the same batching and event-stream following as async code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from .._loop import new_event_loop
from ._dispatch import Dispatcher, FarmClient
from ._submission import Submission


class Background:
    """A thread running an event loop with a client and its Dispatcher (for sync code)."""

    def __init__(self, make_client: Callable[[], FarmClient]) -> None:
        self._make = make_client
        self.loop = new_event_loop()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self.dispatcher: Dispatcher | None = None
        self.thread = threading.Thread(target=self._run, name="corral-futures", daemon=True)
        self.thread.start()
        self._ready.wait()
        if self._failed is not None:  # raised in the caller, not lost in the thread
            raise self._failed

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            client = self._make()
        except BaseException as exc:
            self._failed = exc
            self.loop.close()
            self._ready.set()
            return

        async def start() -> None:
            self.dispatcher = Dispatcher(client)

        self.loop.run_until_complete(start())
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            assert self.dispatcher is not None
            self.loop.run_until_complete(self.dispatcher.aclose())
            self.loop.run_until_complete(client.aclose())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def enqueue(self, subs: list[Submission]) -> None:
        """Hand submissions to the loop; safe from any thread, the loop's own included."""
        assert self.dispatcher is not None
        self.loop.call_soon_threadsafe(self.dispatcher.enqueue, subs)

    def close(self) -> None:
        """Stop the loop; wait for the thread unless called from it."""
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(10.0)


__all__ = ["Background"]
