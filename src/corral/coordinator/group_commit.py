"""Group commit: the store work of requests that arrive together shares one transaction.

A request that writes (a lease pass, the results a worker reports) hands its work to
`GroupCommit.run` and awaits it. The first one queued asks the event loop to flush at its next
turn; by then every request that arrived in the same burst, from any worker, has queued its
work too. The flush runs them all, in arrival order, inside one transaction (`Store.group`)
and commits once; only then does each request get its answer, so nothing is acknowledged
before it is durable. While the store is busy (a PostgreSQL round trip blocks the loop),
requests pile up in the socket buffers, so groups grow with the load without a timer.

    queued --(next turn of the loop, or the group is full)--> flush
    flush:  BEGIN; work 1; work 2; ...; COMMIT; answer each request
    work k raises: ROLLBACK; request k gets its error; the others run again as a group
    COMMIT fails:  every request of the group gets the error (none was acknowledged)

A work item that fails is rare (a stale or malformed result is an answer, not an error), so
the group is optimistic: no savepoint per item, and on a failure it runs again without the
one that failed. What the items did before it was rolled back, and running them again does
what running them alone after it would have done. The work runs synchronously and must not
await: nothing else may join the transaction. Grouping off, each request's work is still one
transaction of its own.

Rejected: a savepoint per item (SAVEPOINT and RELEASE are two round trips each on
PostgreSQL, which ate what sharing the commit saved; measured in bench/README.md); and a
timer of about a millisecond before each flush (on a quiet farm it adds that millisecond to
every round trip, and under load the next turn already collects the burst).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .store import Store

__all__ = ["GroupCommit", "GroupPolicy", "again", "groups", "wanted"]

log = logging.getLogger("corral.coordinator")

T = TypeVar("T")


@dataclass(frozen=True)
class GroupPolicy:
    """When to group and how much: `max_items` bounds a transaction (and so how long other
    coordinators wait for the write lock, and the first request of a group for its answer)."""

    enabled: bool = True
    max_items: int = 64

    def flush_now(self, queued: int) -> bool:
        """Flush at once, not at the next turn: the group is full."""
        return queued >= self.max_items


def groups(queued: int, max_items: int) -> list[range]:
    """The queue's items (by position, in arrival order) cut into transactions."""
    step = max(max_items, 1)
    return [range(i, min(i + step, queued)) for i in range(0, queued, step)]


def again(size: int, failed: int) -> list[int]:
    """After the item at `failed` raised (and its group was rolled back): the others, to run
    again as a group of their own. Those before it ran, but nothing of them was committed."""
    return [i for i in range(size) if i != failed]


def wanted(setting: str, shared: bool) -> bool:
    """Whether to group commits: "on", "off", or "auto" (only on a shared database)."""
    if setting not in ("on", "off", "auto"):
        raise ValueError(f"group commit: {setting!r} is not one of on, off, auto")
    return setting == "on" or (setting == "auto" and shared)


_Item = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class GroupCommit:
    """Runs the store work of concurrent requests in shared transactions (module docstring)."""

    def __init__(self, store: Store, policy: GroupPolicy) -> None:
        self.store = store
        self.policy = policy
        self._queue: list[_Item] = []

    async def run(self, work: Callable[[], T]) -> T:
        """`work()`'s value once it is committed, or its error; alone when grouping is off."""
        if not self.policy.enabled:
            with self.store.group():
                return work()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        if self.policy.flush_now(len(self._queue)):
            self.flush()
        elif len(self._queue) == 1:
            asyncio.get_running_loop().call_soon(self.flush)
        return await future

    def flush(self) -> None:
        """Run everything queued, a group a transaction, and answer each request."""
        queue, self._queue = self._queue, []
        for part in groups(len(queue), self.policy.max_items):
            self._commit([queue[i] for i in part if not queue[i][1].cancelled()])

    def _commit(self, group: list[_Item]) -> None:
        while group:
            group = self._attempt(group)

    def _attempt(self, group: list[_Item]) -> list[_Item]:
        """Run a group in one transaction and answer it; what must run again, if one failed."""
        values: list[Any] = []
        try:
            with self.store.group():
                for work, _ in group:
                    values.append(work())
        except Exception as exc:
            if len(values) == len(group):  # the commit failed: nothing of it is durable
                log.warning("group commit of %d requests failed: %s", len(group), exc)
                for _, future in group:
                    future.set_exception(exc)
                return []
            group[len(values)][1].set_exception(exc)  # its own error; the rest rolled back
            return [group[i] for i in again(len(group), len(values))]
        for (_, future), value in zip(group, values, strict=True):
            future.set_result(value)
        return []
