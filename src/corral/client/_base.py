"""What Client and AsyncClient share, written once and doing no I/O: where the coordinator
is, and turning calls and commands into futures.

`submit`, `submit_with`, `submit_command` and `map` build Submissions (`_tasks.py`) and hand
them to the client's `_enqueue`, which queues them on a Dispatcher: in the caller's event
loop for AsyncClient, in a background thread for Client. Only the kind of future and the kind
of httpx client differ, so the two share this base class instead of keeping two copies.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from .._failover import AsyncFailover, SyncFailover, split_urls
from .._unix import UnixAddress, unix_path
from ._config import resolve
from ._errors import CorralError
from ._futures import AsyncTaskFuture, TaskFuture
from ._submission import JobGroup, Submission
from ._tasks import command_submission, function_submission, map_submissions

F = TypeVar("F", TaskFuture, AsyncTaskFuture)


class BaseClient(ABC, Generic[F]):
    """A client's coordinator and token, and its methods that return futures of type F."""

    def __init__(self, url: str | None, token: str | None, timeout: float) -> None:
        target = resolve(url, token)
        self.url = target.url
        self.token = target.token
        self.timeout = timeout
        self._verify = target.verify
        self._held: list[Submission] | None = None  # an open `as_job` block's submissions
        socket = unix_path(self.url)  # a task's worker relay (worker/relay.py, _unix.py)
        self._unix = UnixAddress(socket) if socket is not None else None

    def _http_options(self) -> dict[str, Any]:
        """Keyword arguments for the httpx.Client or httpx.AsyncClient underneath."""
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        base = "http://corral" if self._unix else split_urls(self.url)[0]
        base_url = base + "/api/v1"  # the failover transport re-aims it
        return {
            "base_url": base_url,
            "headers": headers,
            "timeout": self.timeout,
            "verify": self._verify,
            "trust_env": self._unix is None,  # no HTTP_PROXY between a task and its relay
        }

    def _sync_transport(self, transport: httpx.BaseTransport | None) -> httpx.BaseTransport | None:
        """`transport` (None: httpx's own), moving down the URL list when given several."""
        if self._unix is not None and transport is None:
            return httpx.HTTPTransport(uds=self._unix.short, verify=False)  # plain HTTP
        urls = split_urls(self.url)
        if len(urls) < 2:
            return transport
        return SyncFailover(urls, transport or httpx.HTTPTransport(verify=self._verify))

    def _async_transport(
        self, transport: httpx.AsyncBaseTransport | None
    ) -> httpx.AsyncBaseTransport | None:
        """The same for an httpx.AsyncClient."""
        if self._unix is not None and transport is None:
            return httpx.AsyncHTTPTransport(uds=self._unix.short, verify=False)
        urls = split_urls(self.url)
        if len(urls) < 2:
            return transport
        return AsyncFailover(urls, transport or httpx.AsyncHTTPTransport(verify=self._verify))

    def _release(self) -> None:
        """Let go of what the transport needed beyond its connections."""
        if self._unix is not None:
            self._unix.close()

    @abstractmethod
    def _future(self) -> F:
        """A new, pending future of this client's kind."""

    @abstractmethod
    def _enqueue(self, subs: list[Submission]) -> None:
        """Queue submissions on this client's Dispatcher."""

    def _hand(self, subs: list[Submission]) -> None:
        """Queue submissions, or hold them while an `as_job` block is open."""
        if self._held is not None:
            self._held.extend(subs)
        else:
            self._enqueue(subs)

    @contextlib.contextmanager
    def as_job(self, name: str = "", *, speculative: bool = False) -> Iterator[JobGroup]:
        """Submit everything made inside the block as one job named `name`, sent when the
        block ends (do not wait on its futures inside it). With `speculative`, a task that
        runs well past its phase's median (same task name) gets a backup attempt on another
        worker, and the first attempt to finish is the one recorded. Not thread-safe."""
        if self._held is not None:
            raise RuntimeError("as_job blocks do not nest")
        group = JobGroup(name, speculative)
        held: list[Submission] = []
        self._held = held
        try:
            yield group
        except BaseException:
            for sub in held:  # nothing was sent: nothing runs
                sub.fail(CorralError("not submitted: its as_job block raised"))
            raise
        finally:
            self._held = None
        for sub in held:
            sub.group = group
        if held:
            self._enqueue(held)

    def submit_command(
        self,
        argv: Sequence[str],
        *,
        inputs: Iterable[str | Path] = (),
        outputs: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        requires: Mapping[str, str] | None = None,
        limits: Mapping[str, float] | None = None,
        after: Iterable[Any] = (),
        **spec: Any,
    ) -> F:
        """Run a command on the farm; the future's result is its final Task."""
        future = self._future()
        sub = command_submission(
            argv,
            future,
            inputs=inputs,
            outputs=outputs,
            env=env,
            requires=requires,
            limits=limits,
            after=after,
            **spec,
        )
        self._hand([sub])
        return future

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> F:
        """Call `fn(*args, **kwargs)` on the farm; the future's result is its return value."""
        return self.submit_with({}, fn, *args, **kwargs)

    def submit_with(
        self, options: Mapping[str, Any], fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> F:
        """`submit` with task options: requires, env, limits, max_attempts, after."""
        future = self._future()
        self._hand([function_submission(fn, args, kwargs, options, future)])
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        chunksize: int = 1,
        options: Mapping[str, Any] | None = None,
    ) -> list[F]:
        """One future per item of `fn` over zipped iterables; `chunksize` calls a task."""
        subs, futures = map_submissions(fn, iterables, chunksize, options or {}, self._future)
        if subs:
            self._hand(subs)
        return futures


__all__ = ["BaseClient"]
