"""The autoscaler (issue 16): the I/O around the pure policy (scaling.py).

Every `scale_interval` seconds, and at once when a job is submitted, one coordinator:

    gathers facts     the ready queue per requirement class (with each job's mean run time
                      from its succeeded tasks), the workers (busy slots, idle since when,
                      draining), the launches not joined yet
    decides           scaling.decide: launches per provider, workers to drain, launches to
                      give up, and the reasons `corral scale` shows
    acts              mints a worker token per launch (expiring soon after the provider's
                      join_timeout unless its worker joins), asks the provider to start a
                      worker named after the launch; drains idle workers through the same
                      path as `corral drain` (stops.py: they finish their tasks and give back
                      prefetched ones, then leave); once a worker is gone, asks its provider
                      to clean up and revokes its token; gives up launches that did not join
                      in time (counted as failed, cleaned up the same way)

A launch's life (LaunchInfo.state):

    starting -> launched -> joined -> draining -> stopped
        |           |        (adopted: a worker found running, see below)
        +-----------+-> failed (the provider refused, its process exited, no join in time)

With several coordinators on one PostgreSQL database only the one holding the `autoscaler`
lead (`Store.lead`, an advisory lock) runs it; another takes over when that one dies.
Launches live in the leader's memory: a new leader (or a restart) adopts the running
workers whose name marks them as a configured provider's (`<provider>-<8 hex>`), drains
them when idle as usual, but has no handle to clean up after them, and forgets launches that
had not joined (their tokens expire at join_timeout; a worker joining later is adopted).

Idle time is observed, not stored: a worker is idle since the first decision that saw it
with no busy slot, so a worker running tasks shorter than `scale_interval` back to back may
look idle; the policy still drains only workers no queued task could use.

Rejected: a launches table in the store. It would let a new leader clean up what another
started, at the price of a schema and a second source of truth next to the providers' own
(Slurm's queue, the cloud's node list), which are the ones that know what still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._signal import Broadcast
from ..protocol import LaunchInfo, ScaleProviderInfo, ScaleStatus, Worker, make_join
from .access import new_token
from .metrics import Metrics
from .providers import ProviderError, Start, WorkerProvider, build_providers
from .scaling import Launch, Provider, QueueClass, WorkerState, decide
from .settings import Settings
from .stops import Stops
from .store import NotFound, Store
from .store._rows import class_requires

__all__ = [
    "BACKOFF",
    "BACKOFF_MAX",
    "JOIN_MARGIN",
    "LEAD",
    "Autoscaler",
    "autoscaler",
    "launch_provider",
    "new_launch_id",
    "paused_until",
    "queue_classes",
    "worker_facts",
]

log = logging.getLogger("corral.coordinator")

LEAD = "autoscaler"
OWNER = "autoscaler"  # the actor in the audit log; a launch's token is owned by OWNER/LAUNCH
RECENT = 50  # ended launches `corral scale` shows
MEANS_TTL = 10.0  # seconds a job's mean run time is reused before it is read again
# after failed launches in a row, a provider starts nothing for BACKOFF x 2^(n-1) seconds, up
# to BACKOFF_MAX: a broken start script or an exhausted quota is not hammered every second
BACKOFF = 5.0
BACKOFF_MAX = 300.0
# a launch's token outlives its join_timeout by this much, so a worker that joins at the last
# moment is seen (and its token made permanent) before the token runs out under it
JOIN_MARGIN = 10.0
GONE = ("lost", "gone")
PENDING = ("starting", "launched")
LIVE = ("joined", "adopted", "draining")


# pure: facts from what the store returned
def queue_classes(
    rows: Iterable[tuple[str, str, int]], means: Mapping[str, float]
) -> list[QueueClass]:
    """The queue per requirement class from (class, job, ready tasks) rows; a class's
    expected run time is its jobs' means weighted by their tasks, unknown (None) while one
    of its jobs has no succeeded task yet."""
    tasks: dict[str, int] = {}
    weighted: dict[str, float | None] = {}
    for key, job, n in rows:
        tasks[key] = tasks.get(key, 0) + n
        mean, sofar = means.get(job), weighted.get(key, 0.0)
        weighted[key] = None if mean is None or sofar is None else sofar + mean * n
    return [
        QueueClass(class_requires(key), n, None if (w := weighted[key]) is None else w / n)
        for key, n in sorted(tasks.items())
    ]


def new_launch_id(provider: str) -> str:
    """A launch id, also its worker's name: `<provider>-<8 hex>`."""
    return f"{provider}-{secrets.token_hex(4)}"


def launch_provider(name: str, providers: Iterable[str]) -> str | None:
    """The provider a worker's name marks it as started by, or None."""
    provider, _, suffix = name.rpartition("-")
    if len(suffix) != 8 or any(c not in "0123456789abcdef" for c in suffix):
        return None
    return provider if provider in set(providers) else None


def paused_until(failures: int, last: float) -> float:
    """Until when a provider whose last `failures` launches failed (the last at `last`)
    starts nothing."""
    if failures <= 0:
        return last
    return last + min(BACKOFF * 2.0 ** min(failures - 1, 16), BACKOFF_MAX)


def worker_facts(
    workers: Sequence[Worker], started: Mapping[str, str], idle: Mapping[str, float], now: float
) -> tuple[list[WorkerState], dict[str, float]]:
    """The policy's view of the workers not gone, and since when each idle one is idle
    (kept from `idle`, or now for one seen idle first); `started` maps a worker id to the
    provider that started it."""
    states: list[WorkerState] = []
    seen: dict[str, float] = {}
    for w in workers:
        if w.status in GONE:
            continue
        if w.slots_used == 0 and w.status == "online":
            seen[w.id] = idle.get(w.id, now)
        provider = started.get(w.id)
        caps = dict(w.capabilities)
        states.append(
            WorkerState(w.id, provider, w.slots_used, w.slots, seen.get(w.id), w.status, caps)
        )
    return states, seen


def _named(reasons: Iterable[str], workers: Sequence[Worker]) -> tuple[str, ...]:
    """The policy's reasons with worker names (the launch ids) for worker ids."""
    names = {f"worker {w.id} ": f"worker {w.name} " for w in workers}
    out = []
    for reason in reasons:
        if reason.startswith("worker "):
            head = reason[: reason.index(" ", 7) + 1]
            reason = names.get(head, head) + reason[len(head) :]
        out.append(reason)
    return tuple(out)


@dataclass
class _Launch:
    """One launch, as this coordinator follows it."""

    id: str
    provider: str
    started: float
    token_id: str | None
    state: str = "starting"
    handle: str | None = None
    worker_id: str | None = None
    ended: float | None = None
    error: str | None = None

    def info(self) -> LaunchInfo:
        return LaunchInfo(
            self.id,
            self.provider,
            self.state,
            self.started,
            self.handle,
            self.worker_id,
            self.ended,
            self.error,
        )


class Autoscaler:
    """Starts and stops workers through providers, as the policy decides."""

    def __init__(
        self,
        store: Store,
        stops: Stops,
        metrics: Metrics,
        settings: Settings,
        providers: Sequence[WorkerProvider],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.stops = stops
        self.metrics = metrics
        self.settings = settings
        self.providers = {p.name: p for p in providers}
        self.clock = clock
        self.leader = False
        self.active: dict[str, _Launch] = {}  # launch id -> launch not ended
        self.recent: deque[_Launch] = deque(maxlen=RECENT)  # ended, newest last
        self.counts = {name: [0, 0] for name in self.providers}  # launched, failed
        self.failing = {name: (0, 0.0) for name in self.providers}  # in a row, last at
        self.idle: dict[str, float] = {}
        self.reasons: tuple[str, ...] = ()
        self.decided: float | None = None
        self._means: dict[str, tuple[float, float | None]] = {}  # job -> (read at, mean)
        self._wake = Broadcast()
        self._loop: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()  # provider calls under way
        for name in self.providers:  # the counters show 0, not nothing, until a launch
            metrics.launches.labels(name)
            metrics.launch_failures.labels(name)

    def wake(self) -> None:
        """Decide again now (a job was submitted)."""
        self._wake.fire()

    async def start(self) -> None:
        """Start deciding, in the background."""
        self._loop = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop deciding; let provider calls under way end; close the providers (a local
        provider stops its workers: they give their tasks back)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        await self.settle(10.0)
        for provider in self.providers.values():
            try:
                await provider.close()
            except Exception as exc:  # one provider's trouble must not keep the rest open
                log.warning("autoscaler: closing provider %s: %s", provider.name, exc)

    async def settle(self, timeout: float) -> None:
        """Wait (up to `timeout` seconds) for the provider calls under way to end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # a call that ends may start another (a launch given up meanwhile cleans up)
        while self._jobs and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._jobs), timeout=left)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # the database away for a while: try again next time
                log.exception("autoscaler: deciding failed")
            await self._wake.wait(self.settings.scale_interval)

    # one decision
    async def tick(self) -> None:
        """Gather the facts, decide, and act: one round."""
        if not self.store.lead(LEAD):
            self.leader = False
            return
        self.leader = True
        now = self.clock()
        workers = self.store.list_workers()
        self._follow(workers, now)
        await self._check_exits(now)
        started = {r.worker_id: r.provider for r in self.active.values() if r.worker_id}
        states, self.idle = worker_facts(workers, started, self.idle, now)
        pending = [Launch(r.id, r.provider, r.started) for r in self._in(PENDING)]
        policies, paused = self._policies(now)
        decision = decide(self._queue(now), states, policies, pending, now)
        self.reasons, self.decided = paused + _named(decision.reasons, workers), now
        for launch_id in decision.give_up:
            p = self.providers[self.active[launch_id].provider]
            timeout = p.options.join_timeout
            self._end(self.active[launch_id], "failed", f"did not join within {timeout:g} s")
        for worker_id in decision.drain:
            self._drain(worker_id)
        for name, n in decision.launches.items():
            for _ in range(n):
                self._launch(self.providers[name], now)

    def _policies(self, now: float) -> tuple[list[Provider], tuple[str, ...]]:
        """The providers as the policy sees them; one backing off after failed launches
        may start nothing (max_launches 0), and a reason says until when."""
        policies: list[Provider] = []
        reasons: list[str] = []
        for name, p in self.providers.items():
            n, last = self.failing[name]
            until = paused_until(n, last)
            if until > now:
                policies.append(dataclasses.replace(p.policy, max_launches=0))
                reasons.append(
                    f"provider {name}: {n} failed launch{'es' * (n != 1)} in a row; "
                    f"trying again in {until - now:.0f} s"
                )
            else:
                policies.append(p.policy)
        return policies, tuple(reasons)

    def _in(self, states: tuple[str, ...]) -> list[_Launch]:
        return [r for r in self.active.values() if r.state in states]

    def _queue(self, now: float) -> list[QueueClass]:
        rows = self.store.ready_by_job()
        jobs = {job for _, job, _ in rows}
        stale = [j for j in jobs if now - self._means.get(j, (-MEANS_TTL, None))[0] >= MEANS_TTL]
        if stale:
            fresh = self.store.mean_run_seconds(stale)
            self._means.update({j: (now, fresh.get(j)) for j in stale})
        self._means = {j: v for j, v in self._means.items() if j in jobs}
        means = {j: mean for j, (_, mean) in self._means.items() if mean is not None}
        return queue_classes(rows, means)

    def _follow(self, workers: Sequence[Worker], now: float) -> None:
        """Launches whose worker joined, workers that left, workers to adopt."""
        alive = {w.name: w for w in workers if w.status not in GONE}
        by_id = {w.id: w for w in workers}
        for r in self._in(PENDING):
            w = alive.get(r.id)
            if w is not None:
                r.state, r.worker_id = "joined", w.id
                self.failing[r.provider] = (0, 0.0)  # it works (again)
                if r.token_id is not None:  # it now lives as long as its worker
                    self.store.set_token_expiry(r.token_id, None)
        for r in self._in(LIVE):
            w = by_id.get(r.worker_id or "")
            if w is None or w.status in GONE:
                self._end(r, "stopped")
        mine = {r.worker_id for r in self.active.values()}
        for w in alive.values():
            provider = launch_provider(w.name, self.providers)
            if provider is not None and w.id not in mine and w.name not in self.active:
                self.active[w.name] = _Launch(w.name, provider, now, None, "adopted", None, w.id)

    async def _check_exits(self, now: float) -> None:
        for r in self._in(("launched",)):
            provider = self.providers[r.provider]
            try:
                why = await provider.exited(r.handle or "")
            except ProviderError as exc:
                why = str(exc)
            if why:
                self._end(r, "failed", why)

    # acting
    def _launch(self, provider: WorkerProvider, now: float) -> None:
        launch_id = new_launch_id(provider.name)
        o = provider.options
        lifetime = o.join_timeout + JOIN_MARGIN
        # an owner per launch: its token acts for its own worker only, not for the others
        owner = f"{OWNER}/{launch_id}"
        record, secret = new_token(f"launch {launch_id}", "worker", owner, now, lifetime)
        r = _Launch(launch_id, provider.name, now, record.id)
        self.active[launch_id] = r
        self.counts[provider.name][0] += 1
        self.metrics.launches.labels(provider.name).inc()
        url = o.url or self.settings.url
        if not url:
            self._end(r, "failed", "no URL for its worker to join: give the provider url=...")
            return
        self.store.add_token(record)
        ca = self.settings.ca_sha256
        join = make_join(url, ca, secret) if ca and url.startswith("https://") else None
        start = Start(launch_id, url, secret, join, o.slots, dict(o.labels))
        log.info("autoscaler: launching %s on provider %s", launch_id, provider.name)
        self._spawn(self._start(provider, r, start))

    async def _start(self, provider: WorkerProvider, r: _Launch, start: Start) -> None:
        try:
            handle = await provider.launch(start)
        except Exception as exc:  # ProviderError, or a provider's own bug: the launch failed
            if r.ended is None:
                self._end(r, "failed", str(exc).splitlines()[0] if str(exc) else repr(exc))
            return
        r.handle = handle
        if r.ended is not None:  # given up while the provider was still starting it
            await self._clean(r)
        elif r.state == "starting":
            r.state = "launched"

    def _drain(self, worker_id: str) -> None:
        """The policy's drain: the worker finishes its tasks, gives back prefetched ones, and
        leaves; `_follow` then sees it gone and cleans up."""
        try:
            self.stops.drain(worker_id)
        except NotFound:
            return
        self.store.add_audit(self.clock(), OWNER, "", "worker.drain", worker_id, "idle")
        for r in self._in(("joined", "adopted")):
            if r.worker_id == worker_id:
                r.state = "draining"

    def _end(self, r: _Launch, state: str, error: str | None = None) -> None:
        """A launch is over: stopped (its worker gone) or failed; clean up behind it."""
        r.state, r.ended = state, self.clock()
        if error is not None:
            r.error = error
        if state == "failed":
            self.counts[r.provider][1] += 1
            self.failing[r.provider] = (self.failing[r.provider][0] + 1, r.ended)
            self.metrics.launch_failures.labels(r.provider).inc()
            log.warning("autoscaler: launch %s failed: %s", r.id, error)
        self.active.pop(r.id, None)
        self.recent.append(r)
        if r.worker_id is not None:
            self.idle.pop(r.worker_id, None)
        self._spawn(self._clean(r))

    async def _clean(self, r: _Launch) -> None:
        """Make sure the launch's worker is gone (its provider's stop) and its token
        revoked."""
        if r.token_id is not None:
            with contextlib.suppress(NotFound):
                self.store.revoke_token(r.token_id, self.clock())
        if r.handle is None:
            return  # still starting (its _start cleans up), or adopted: nothing to stop
        try:
            await self.providers[r.provider].stop(r.handle)
        except Exception as exc:
            r.error = f"{r.error + '; ' if r.error else ''}cleaning up: {exc}"
            log.warning("autoscaler: stopping %s (%s): %s", r.id, r.handle, exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    # what `corral scale` shows
    def status(self) -> ScaleStatus:
        """The providers, recent launches (newest first) and the latest reasons."""
        launches = [r.info() for r in [*self.recent, *self.active.values()]]
        launches.sort(key=lambda x: x.started, reverse=True)
        return ScaleStatus(
            self.leader,
            [self._provider_info(p) for p in self.providers.values()],
            launches,
            list(self.reasons),
            self.decided,
        )

    def _provider_info(self, p: WorkerProvider) -> ScaleProviderInfo:
        mine = [r for r in self.active.values() if r.provider == p.name]
        o = p.options
        return ScaleProviderInfo(
            name=p.name,
            kind=p.kind,
            min=o.min,
            max=o.max,
            slots=o.slots,
            labels=dict(o.labels),
            idle_timeout=o.idle_timeout,
            join_timeout=o.join_timeout,
            running=sum(r.state in LIVE for r in mine),
            launching=sum(r.state in PENDING for r in mine),
            launched=self.counts[p.name][0],
            failed=self.counts[p.name][1],
        )


def autoscaler(
    store: Store, stops: Stops, metrics: Metrics, settings: Settings, clock: Callable[[], float]
) -> Autoscaler | None:
    """The coordinator's autoscaler for its `--scale` values (checked by the CLI), if any."""
    if not settings.scale:
        return None
    providers = build_providers(settings.scale, settings.data_dir)
    return Autoscaler(store, stops, metrics, settings, providers, clock)
