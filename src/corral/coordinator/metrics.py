"""`GET /metrics`: the coordinator's figures in Prometheus text format (prometheus_client).

Two kinds of figure, kept apart on purpose:

    from the store, read at scrape time   tasks queued and running (by requirement class and
                                          owner), workers by status, slots busy and total,
                                          blob store bytes: one query each (store/_figures.py)
    counted here, as events happen        attempt results by outcome, run time and queue wait
                                          histograms, lease and result request latencies,
                                          autoscaler launches and failures by provider

Each app has its own CollectorRegistry (tests build several apps in one process). Store figures
are true for the whole farm, also when several coordinators share a database; the counters and
histograms are this coordinator's own, as Prometheus expects of counters (sum them over
instances).

Rejected: keeping gauges up to date on every submit, lease and result would add writes to the
hot path and drift from the store after a restart or on a shared database; a scrape every few
seconds reading a handful of indexed counts costs less.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from ..protocol import Task
from .access import may_call
from .blobs import Blobs
from .errors import ApiError
from .guards import principal
from .store import Leased, Store

__all__ = ["METRICS_PATH", "Metrics", "StoreFigures", "TIMED"]

METRICS_PATH = "/metrics"
#: the requests whose latency is measured, by handler name; a lease request's time includes
#: its long poll (up to its `wait`) when nothing is queued for the worker
TIMED = {"lease": "lease", "task_result": "result", "worker_results": "results"}
# seconds: tasks run from milliseconds to days
_RUN_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30)


class StoreFigures(Collector):
    """The gauges read from the store (and blob store) at each scrape."""

    def __init__(self, store: Store, blobs: Blobs) -> None:
        self.store = store
        self.blobs = blobs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One family per figure, each from one query."""
        for status in ("queued", "running"):
            family = GaugeMetricFamily(
                f"corral_tasks_{status}",
                f"Tasks {status}, by requirement class and owner.",
                labels=["requires", "owner"],
            )
            for requires, owner, count in self.store.live_task_counts(status):
                family.add_metric([requires, owner], count)
            yield family
        workers = GaugeMetricFamily(
            "corral_workers", "Registered workers, by status.", labels=["status"]
        )
        for status, count in sorted(self.store.worker_counts().items()):
            workers.add_metric([status], count)
        yield workers
        busy, total = self.store.slot_counts()
        yield GaugeMetricFamily("corral_slots_busy", "Slots taken by running tasks.", busy)
        yield GaugeMetricFamily(
            "corral_slots_total", "Slots of the online and draining workers.", total
        )
        yield GaugeMetricFamily(
            "corral_blob_store_bytes", "Bytes in the blob store.", self.blobs.total_bytes()
        )


class Metrics:
    """One coordinator's registry: its event counters plus the store's figures."""

    def __init__(self, store: Store, blobs: Blobs) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.results = Counter(
            "corral_task_results",
            "Attempts that reported back, by outcome (queued: to be retried).",
            ["outcome"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "corral_task_run_seconds",
            "Run time of the attempts that reported back, from lease to result.",
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "corral_task_queue_wait_seconds",
            "From submission to a task's first lease (dependencies' time included).",
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self.requests = Histogram(
            "corral_request_seconds",
            "Latency of lease and result requests (a lease's includes its long poll).",
            ["request"],
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.launches = Counter(
            "corral_autoscaler_launches",
            "Workers the autoscaler asked a provider to start, by provider.",
            ["provider"],
            registry=self.registry,
        )
        self.launch_failures = Counter(
            "corral_autoscaler_launch_failures",
            "Launches that failed (refused, exited, or no join within join_timeout).",
            ["provider"],
            registry=self.registry,
        )
        self.channels = Gauge(
            "corral_channels_open",
            "WebSocket channels (issue 18) open to this coordinator now.",
            registry=self.registry,
        )
        self.channel_calls = Counter(
            "corral_channel_calls",
            "API calls served over the WebSocket channel rather than plain HTTP.",
            registry=self.registry,
        )
        self.registry.register(StoreFigures(store, blobs))

    def leased(self, leased: Iterable[Leased], now: float) -> None:
        """First attempts just leased: how long they waited."""
        for x in leased:
            if x.attempt == 1 and x.created is not None:
                self.queue_wait.observe(max(now - x.created, 0.0))

    def finished(self, attempts: Iterable[tuple[Task, str]], now: float) -> None:
        """Attempts recorded, each with the status it left its task in."""
        counts: dict[str, int] = {}  # one labels() lookup a status, not a task
        for task, status in attempts:
            counts[status] = counts.get(status, 0) + 1
            if task.started is not None:
                self.run_seconds.observe(max(now - task.started, 0.0))
        for status, n in counts.items():
            self.results.labels(status).inc(n)

    def request(self, operation: str, seconds: float) -> None:
        """A request served; only the TIMED ones are kept."""
        name = TIMED.get(operation)
        if name is not None:
            self.requests.labels(name).observe(seconds)

    def endpoint(self, public: bool) -> Callable[[Request], Awaitable[Response]]:
        """The `GET /metrics` handler: admin and metrics tokens, or anyone when `public`."""

        async def metrics(request: Request) -> Response:
            if not public:
                who = principal(request)
                if not may_call(who, "metrics"):
                    raise ApiError("forbidden", f"a {who.role} token may not read metrics")
            # the store's queries are quick: the scrape runs them on the loop like any request
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return metrics
