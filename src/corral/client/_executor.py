"""corral.Executor: a concurrent.futures.Executor whose workers are the farm.

Its futures are `concurrent.futures.Future`s (TaskFuture), settled by the client's one
background thread as the jobs' event streams report; `wait`, `as_completed` and
`add_done_callback` work as usual. A future stays PENDING while its task is queued, so
`cancel()` succeeds only then, and kills the task on the farm.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ._client import Client
from ._futures import TaskFuture


class Executor(concurrent.futures.Executor):
    """Run Python callables on a corral farm, like ProcessPoolExecutor does on local cores."""

    def __init__(
        self,
        client: Client | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        requires: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        limits: Mapping[str, float] | None = None,
        max_attempts: int = 3,
    ) -> None:
        self._owns_client = client is None
        self.client = client if client is not None else Client(url, token)
        self.options: dict[str, Any] = {
            "requires": dict(requires or {}),
            "env": dict(env or {}),
            "limits": dict(limits or {}),
            "max_attempts": max_attempts,
        }
        self._futures: set[TaskFuture] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def _track(self, futures: list[TaskFuture]) -> None:
        with self._lock:
            self._futures.update(futures)
        for f in futures:
            f.add_done_callback(self._forget)

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Run `fn(*args, **kwargs)` as one task."""
        self._check_open()
        future = self.client.submit_with(self.options, fn, *args, **kwargs)
        self._track([future])
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Results of `fn` over zipped iterables, in order; `chunksize` calls a task."""
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        futures = self.client.map(fn, *iterables, chunksize=chunksize, options=self.options)
        self._track(futures)
        return _results(futures, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work; optionally cancel queued tasks; optionally wait for the rest."""
        self._shutdown = True
        with self._lock:
            futures = list(self._futures)
        if cancel_futures:
            for f in futures:
                f.cancel()
        if wait:
            concurrent.futures.wait(futures)
            self._release([])
        else:
            self._release([f for f in futures if not f.done()])

    def _release(self, pending: list[TaskFuture]) -> None:
        # a client made by this executor is closed once its last future is settled
        if not self._owns_client:
            return
        left = set(pending)
        if not left:
            self.client.close()
            return

        def settled(future: concurrent.futures.Future[Any]) -> None:
            with self._lock:
                left.discard(future)
                last = not left
            if last:
                self.client.close()

        for f in pending:
            f.add_done_callback(settled)


def _results(futures: list[TaskFuture], deadline: float | None) -> Iterator[Any]:
    # like the standard library: raise at the first failure, cancel what is left on exit
    pending = list(reversed(futures))
    try:
        while pending:
            left = None if deadline is None else deadline - time.monotonic()
            yield pending[-1].result(left)
            pending.pop()
    finally:
        for f in pending:
            f.cancel()


__all__ = ["Executor"]
