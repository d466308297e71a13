"""Group commit: the store work of requests that arrive together shares one transaction.

A request that writes (a lease pass, the results a worker reports) hands its work to
`GroupCommit.run` and awaits it. The first one queued asks the event loop to flush at its next
turn; by then every request that arrived in the same burst, from any worker, has queued its
work too. The flush runs them all inside one transaction, each in a savepoint of its own, and
commits once; only then does each request get its answer, so nothing is acknowledged before it
is durable. A work item that fails rolls back its own savepoint and fails its own request;
the others still commit. A failed commit fails every request of the group (none of them was
acknowledged, so each worker sends its results again).

While the store is busy (a PostgreSQL round trip blocks the loop), requests pile up in the
socket buffers, so the groups grow with the load without a timer.

    queued --(next turn of the loop, or the group is full)--> flush
    flush:  BEGIN; for each item: SAVEPOINT; work; RELEASE (or ROLLBACK TO); COMMIT
            then answer every request (its value, its own error, or the commit's error)

The work runs synchronously and must not await: nothing else may join the transaction
(`Store.atomic`). A group of one is one transaction, with no savepoint; so is each request's
work when grouping is off.

Rejected: a timer of about a millisecond before each flush. On a quiet farm it adds that
millisecond to every round trip, and under load the next turn already collects the burst.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .store import Store

__all__ = ["GroupCommit", "GroupPolicy", "groups", "wanted"]

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
            with self.store.atomic():
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
        if len(group) == 1:  # alone: its own transaction, no savepoint
            work, future = group[0]
            try:
                with self.store.atomic():
                    value = work()
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(value)
            return
        done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            with self.store.atomic():
                for work, future in group:
                    try:
                        with self.store.atomic():  # its own savepoint
                            done.append((future, work(), None))
                    except Exception as exc:
                        done.append((future, None, exc))
        except Exception as exc:  # the commit failed: nothing of the group is durable
            log.warning("group commit of %d requests failed: %s", len(group), exc)
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, value, error in done:
            if future.done():  # cancelled meanwhile
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
