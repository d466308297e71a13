"""A joblib backend: `corral.register_joblib()`, then `joblib.parallel_config(backend="corral")`.

Each joblib batch (a picklable `BatchedCalls`) becomes one function task; joblib's own
auto-batching sizes the batches. The workers need joblib installed, as they need any module
the called functions import. joblib is imported only when the backend is registered.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib
from collections.abc import Callable
from typing import Any

from ._client import Client
from ._executor import Executor

NAME = "corral"


def _joblib() -> Any:
    try:
        return importlib.import_module("joblib")
    except ImportError as exc:  # an optional dependency
        raise ImportError("the corral joblib backend needs joblib: pip install joblib") from exc


def _call(func: Callable[[], Any]) -> Any:
    return func()


def farm_slots(client: Client | None) -> int:
    """Slots of the online workers: what n_jobs=-1 means on a farm."""
    own = client is None
    c = Client() if client is None else client
    try:
        return max(sum(w.slots for w in c.workers() if w.status == "online"), 1)
    finally:
        if own:
            c.close()


class _CorralMixin:
    """The corral half of the backend; joblib's base classes are mixed in at registration."""

    supports_retrieve_callback = True
    default_n_jobs = -1
    # a farm task costs a process start and a few round trips: aim for coarse batches
    MIN_IDEAL_BATCH_DURATION = 5.0
    MAX_IDEAL_BATCH_DURATION = 60.0

    def __init__(
        self, client: Client | None = None, options: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.client = client
        self.options = options or {}
        self.executor: Executor | None = None
        self.parallel: Any = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """n_jobs, or the farm's online slots for -1 or None."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None or n_jobs < 0:
            return farm_slots(self.client)
        return int(n_jobs)

    def configure(self, n_jobs: int = 1, parallel: Any = None, **_: Any) -> int:
        """Start an executor for this Parallel call."""
        self.parallel = parallel
        if self.executor is None:
            self.executor = Executor(self.client, **self.options)
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Any, callback: Any = None) -> concurrent.futures.Future[Any]:
        """Run one batch as a task."""
        assert self.executor is not None
        future = self.executor.submit(_call, func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: concurrent.futures.Future[Any]) -> Any:
        """The batch's results, or its exception."""
        return out.result()

    def terminate(self) -> None:
        """Cancel what is still queued and let the executor go."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel queued batches; be ready for more if asked."""
        self.terminate()
        if ensure_ready:
            self.executor = Executor(self.client, **self.options)


def register_joblib(client: Client | None = None, **options: Any) -> None:
    """Register the `corral` joblib backend (using `client`, or the configured coordinator)."""
    joblib = _joblib()
    base = importlib.import_module("joblib._parallel_backends")
    bases = (_CorralMixin, base.AutoBatchingMixin, base.ParallelBackendBase)
    backend = type("CorralBackend", bases, {})
    joblib.register_parallel_backend(
        NAME, functools.partial(backend, client=client, options=options)
    )


__all__ = ["farm_slots", "register_joblib"]
