"""Wake-ups that cross coordinators: a submit on one wakes a request held on another.

A coordinator's held requests wait on Broadcasts (`_signal.py`): lease requests on `work`,
event streams on `events`, a worker's heartbeat on its own. Firing one here also announces
it, coalesced per turn of the event loop, through the store's `notify` (PostgreSQL NOTIFY);
every other coordinator on the database hears it (`Store.listen`) and fires its own. NOTIFY
is only a hint (a pooler in transaction mode drops it, a listening connection can be lost),
so on a shared database `work` and `events` are also fired every `recheck` seconds, and a
held heartbeat looks for a kill or a drain that often (service.py). Announcements are words:

    w        work: something may be leasable
    e        events: a job has new events
    k:<id>   worker <id>'s held heartbeat has news (a kill, a drain, a blocked task)
    k*       every worker's (a submit that asks for programs they may have)

Rejected: polling alone (a second of latency on every hand-off), and NOTIFY alone (lost
wake-ups behind a pooler or across a reconnect leave a request held for its full wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .._signal import Broadcast
from .store import Store

__all__ = ["Announced", "Wakeups"]

log = logging.getLogger("corral.coordinator")


class Announced(Broadcast):
    """A Broadcast whose `fire` is also announced to the other coordinators."""

    def __init__(self, wakeups: Wakeups, kind: str) -> None:
        super().__init__()
        self._wakeups = wakeups
        self._kind = kind

    def fire(self) -> None:
        super().fire()
        self._wakeups.announce(self._kind)

    def fire_here(self) -> None:
        """Wake this coordinator's waiters only (what another announced)."""
        super().fire()


class Wakeups:
    """The coordinator's announced Broadcasts, the per-worker ones, and the listener."""

    def __init__(self, store: Store, recheck: float = 1.0) -> None:
        self.store = store
        self.recheck = recheck if store.shared else 0.0  # 0: nothing to re-check for
        self.work = Announced(self, "w")
        self.events = Announced(self, "e")
        self.workers: dict[str, Broadcast] = {}
        self._pending: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def announce(self, kind: str) -> None:
        """Tell the others, at the end of this turn of the loop (one NOTIFY for a burst)."""
        if not self.store.shared:
            return
        first = not self._pending
        self._pending.add(kind)
        if first:
            try:
                asyncio.get_running_loop().call_soon(self._flush)
            except RuntimeError:  # no loop (a test driving the service directly): now
                self._flush()

    def _flush(self) -> None:
        kinds, self._pending = " ".join(sorted(self._pending)), set()
        try:
            self.store.notify(kinds)
        except Exception as exc:  # the backend's own error type; the re-check covers it
            log.warning("cannot announce %s to other coordinators: %s", kinds, exc)

    def wake_worker(self, worker_id: str) -> None:
        """Wake a worker's held heartbeat, here and on every other coordinator."""
        signal = self.workers.get(worker_id)
        if signal:
            signal.fire()
        self.announce(f"k:{worker_id}")

    def wake_all_workers(self) -> None:
        """Wake every held heartbeat, here and elsewhere."""
        for signal in self.workers.values():
            signal.fire()
        self.announce("k*")

    def heard(self, kinds: str) -> None:
        """Another coordinator announced these: wake the waiters here."""
        for kind in kinds.split():
            if kind == "w":
                self.work.fire_here()
            elif kind == "e":
                self.events.fire_here()
            elif kind == "k*":
                for signal in self.workers.values():
                    signal.fire()
            elif kind.startswith("k:") and kind[2:] in self.workers:
                self.workers[kind[2:]].fire()

    def start(self) -> None:
        """Listen to the other coordinators and re-check on a timer (shared databases)."""
        if self.recheck > 0:
            self._tasks = [
                asyncio.create_task(self.store.listen(self.heard)),
                asyncio.create_task(self._recheck()),
            ]

    async def _recheck(self) -> None:
        while True:
            await asyncio.sleep(self.recheck)
            self.work.fire_here()
            self.events.fire_here()

    async def stop(self) -> None:
        """Stop listening."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
