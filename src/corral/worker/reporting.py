"""Finished attempts on their way to the coordinator: the worker's outbox.

A result goes out with the worker's next lease call when one is about to be made (one request
reports it and asks for its slot's next task), else in one `POST /workers/{id}/results` with
whatever else has finished. While other tasks still run, a result may wait `LINGER` seconds
for company (prefetch.py). Each result is in one of three places:

    put ──> outbox ──take──> in flight ──answered──> settled: its task directory is removed
              ^                  │
              └──── give_back ───┘  (the coordinator could not be reached: sent again)

A heartbeat that calls a finished task's lease stale settles it at once: it is not sent (or
sent again), as the coordinator would refuse it.

A stale lease is logged as a warning only when it means a lost result (`stale_level`): one
that never left the worker, or was refused on its first send. A result that went out before
(on the wire now, or given back after a request whose answer was lost) was most likely
recorded by that send: the lease ended because of it, and that is no news.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from ..protocol import ResultsReply, TaskResult
from .prefetch import BATCH, LINGER

__all__ = ["Outbox", "Send", "stale_level"]

log = logging.getLogger("corral.worker")
TAKE_BYTES = 8 * 1024 * 1024  # inline content in one request, well under a body's limit

# sends a batch of results; the coordinator's answer, or None when it could not be reached
Send = Callable[[dict[str, TaskResult]], Awaitable[ResultsReply | None]]


def stale_level(sent_before: bool) -> int:
    """How loudly to log that a result's lease is stale: a warning only when no earlier send
    of it may have been recorded (then the result was really refused)."""
    return logging.INFO if sent_before else logging.WARNING


class Outbox:
    """Results not yet recorded by the coordinator, and the directories of their tasks."""

    def __init__(
        self,
        remove: Callable[[Path], None],
        stored: Callable[[Iterable[str]], None],
        busy: Callable[[], bool],
    ) -> None:
        self._remove = remove  # deletes a settled task's directory
        self._stored = stored  # told which inline blobs the coordinator now holds
        self._busy = busy  # whether other tasks still run (a result may wait for them)
        self._queued: dict[str, TaskResult] = {}
        self._inflight: dict[str, TaskResult] = {}
        self._dirs: dict[str, Path] = {}  # task id -> its directory, until settled
        self._resent: set[str] = set()  # given back: the first send may have been recorded
        self.ready = asyncio.Event()

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._queued

    def put(self, task_id: str, result: TaskResult, task_dir: Path) -> None:
        """A finished attempt to report; its directory goes once the answer comes."""
        self._queued[task_id] = result
        self._dirs[task_id] = task_dir
        self.ready.set()

    def leases(self) -> list[str]:
        """Leases still to be presented in heartbeats (results not yet answered), less those a
        heartbeat already called stale: presented again, each would be answered stale at once,
        and the heartbeat loop would spin while the request carrying them is held."""
        held = (*self._queued.items(), *self._inflight.items())
        return [r.lease_id for task_id, r in held if task_id in self._dirs]

    def take(self) -> dict[str, TaskResult]:
        """What is queued, oldest first, now in flight (a lease call or `send` carries it):
        all of it, or as much as keeps the request's inline content under `TAKE_BYTES`."""
        taken: dict[str, TaskResult] = {}
        size = 0
        for task_id, result in self._queued.items():
            size += sum(map(len, result.inline.values()))
            if taken and size > TAKE_BYTES:
                break
            taken[task_id] = result
        for task_id in taken:
            del self._queued[task_id]
        self._inflight.update(taken)
        if self._queued:
            self.ready.set()  # the rest goes with the next request
        return taken

    def give_back(self, results: dict[str, TaskResult]) -> None:
        """Results whose request failed: queued again, unless settled meanwhile."""
        for task_id in results:
            self._inflight.pop(task_id, None)
        again = {t: r for t, r in results.items() if t in self._dirs}
        self._resent.update(again)
        self._queued = {**again, **self._queued}
        if again:
            self.ready.set()

    def answered(
        self, results: dict[str, TaskResult], stale: Iterable[str], refused: dict[str, str]
    ) -> None:
        """The coordinator answered for these: recorded, or refused (stale or malformed)."""
        resent = self._resent.intersection(results)
        for task_id, result in results.items():
            self._inflight.pop(task_id, None)
            self._settle(task_id)
            if task_id not in refused:  # its inline blobs are stored now
                self._stored(result.inline)
        for task_id in stale:
            # our lease was superseded (killed, expired, another attempt won): that one stands;
            # or, sent again after a request whose answer was lost, the first send counted
            level = stale_level(task_id in resent)
            log.log(level, "result for %s refused: stale_lease (no longer this worker's)", task_id)
        for task_id, why in refused.items():
            log.error("result for %s refused: %s", task_id, why)

    def drop_stale(self, lease_ids: Iterable[str]) -> None:
        """A heartbeat said these leases are no longer ours: their results will not count."""
        stale = set(lease_ids)
        for task_id, result in {**self._inflight, **self._queued}.items():
            if result.lease_id in stale and task_id in self._dirs:
                # on the wire, it most likely counted already (the heartbeat crossed it), so
                # that is no news; one never sent lost its lease to a kill or an expiry
                level = stale_level(task_id in self._inflight or task_id in self._resent)
                self._queued.pop(task_id, None)
                self._settle(task_id)  # and if it is on the wire, it is not sent again
                log.log(level, "result for %s refused: stale_lease (told by a heartbeat)", task_id)

    def _settle(self, task_id: str) -> None:
        self._resent.discard(task_id)
        task_dir = self._dirs.pop(task_id, None)
        if task_dir is not None:
            self._remove(task_dir)

    async def loop(self, send: Send, backoff: tuple[float, ...]) -> None:
        """Send results that no lease call took: the lease loop is long-polling, waiting on
        the desktop's owner, or stopping."""
        failures = 0
        while True:
            await self.ready.wait()
            self.ready.clear()
            await asyncio.sleep(0)  # a lease call woken by the same finish goes first
            await self._linger()
            if await self.send(send):
                failures = 0
            else:
                failures += 1
                await asyncio.sleep(backoff[min(failures, len(backoff)) - 1])

    async def _linger(self) -> None:
        """While other tasks still run, let results gather (prefetch.py: LINGER)."""
        deadline = time.monotonic() + LINGER
        while self._queued and self._busy() and len(self._queued) < BATCH:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self.ready.wait()

    async def send(self, send: Send) -> bool:
        """Report what is queued; False when the coordinator could not be reached."""
        results = self.take()
        if not results:
            return True
        reply = await send(results)
        if reply is None:
            self.give_back(results)
            return False
        self.answered(results, reply.stale, reply.refused)
        return True

    async def flush(self, send: Send, backoff: tuple[float, ...]) -> None:
        """Before leaving: report what is left, riding out a short coordinator outage."""
        for delay in (0.0, *backoff):
            await asyncio.sleep(delay)
            while self._inflight:  # a lease call or the loop has them on the wire
                await asyncio.sleep(0.01)
            if not self._queued:
                return
            await self.send(send)
        if self._queued:
            log.error("gave up reporting %d result(s); leases will expire", len(self._queued))
