"""The autoscaling policy (issue 16): pure, from facts to a decision; no I/O, no clock.

One decision, in this order:

1. give up launches that did not join within their provider's `join_timeout`;
2. serve the queue: each requirement class's tasks first take the free slots of workers that
   are online or still starting (a launch not yet joined counts with what its provider offers,
   so the policy never launches twice for the same tasks); what is left is started on the
   provider whose worker fits (`scheduler.Matcher`, the lease's own matcher) with the fewest
   launches, within its `max` (workers + launches) and its growth per decision;
3. start what each provider's `min` still asks for, even with no queue;
4. drain provider-started workers idle longer than `idle_timeout` that no queued task could use,
   never below `min`; a busy worker is never drained, nor one Corral did not start.

When a class's expected run time is known, tasks that the busy matching slots would clear
before a new worker could join (`startup`) wait for them instead of starting one.

Rejected: scaling down by slots free (Dask's `adapt`), which stops workers that still run or
hold work; here only a worker with no busy slot is drained, and draining is gentle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..protocol import slots_needed
from .scheduler import Matcher

__all__ = [
    "Decision",
    "Launch",
    "Offer",
    "Provider",
    "QueueClass",
    "WorkerState",
    "decide",
    "describe",
]

SERVING = ("online", "launching")  # statuses whose free slots can take queued tasks
GONE = ("offline",)  # statuses that no longer count against a provider's max


@dataclass(frozen=True)
class QueueClass:
    """Queued tasks that share one `requires`; `expected_seconds` from the job's finished tasks."""

    requires: Mapping[str, str]
    tasks: int
    expected_seconds: float | None = None


@dataclass(frozen=True)
class WorkerState:
    """A connected (or starting) worker; `caps` None means what its provider offers."""

    id: str
    provider: str | None
    busy: int
    slots: int
    idle_since: float | None
    status: str = "online"
    caps: Mapping[str, object] | None = None


@dataclass(frozen=True)
class Offer:
    """What a worker a provider starts will offer: slots, labels, memory, other capabilities."""

    slots: int
    labels: Mapping[str, str] = field(default_factory=dict)
    memory: int | None = None
    caps: Mapping[str, object] = field(default_factory=dict)

    def capabilities(self) -> dict[str, object]:
        """The capability map the matcher reads, as such a worker would report it."""
        caps: dict[str, object] = {**self.caps, "labels": dict(self.labels), "slots": self.slots}
        if self.memory is not None:
            caps["memory_free"] = self.memory
        return caps


@dataclass(frozen=True)
class Provider:
    """A way to start workers, and its limits; `max_launches` is how fast it may grow."""

    name: str
    offer: Offer
    max: int
    min: int = 0
    idle_timeout: float = 300.0
    max_launches: int = 4
    join_timeout: float = 600.0
    startup: float = 60.0  # about how long a launched worker takes to join


@dataclass(frozen=True)
class Launch:
    """A worker being started that has not joined yet."""

    id: str
    provider: str
    started: float


@dataclass(frozen=True)
class Decision:
    """What to do now: workers to start per provider, workers to drain, launches to give up."""

    launches: Mapping[str, int]
    drain: tuple[str, ...]
    give_up: tuple[str, ...]
    reasons: tuple[str, ...]


@dataclass
class _Slots:
    """Free slots of one worker, real or to be started, while the queue is handed out."""

    fits: Matcher
    free: int
    total: int
    worker: str | None = None  # None: a launch, pending or decided now
    used: bool = False

    @property
    def launch(self) -> bool:
        return self.worker is None


@dataclass
class _Plan:
    providers: Mapping[str, Provider]
    counted: dict[str, int]  # per provider: workers not gone + live launches (against max)
    active: dict[str, int]  # per provider: workers not draining + live launches (for min)
    pool: list[_Slots]
    launches: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def room(self, p: Provider) -> int:
        """How many more workers `p` may start in this decision."""
        started = self.launches.get(p.name, 0)
        return max(0, min(p.max - self.counted[p.name] - started, p.max_launches - started))

    def start(self, p: Provider, n: int) -> None:
        self.launches[p.name] = self.launches.get(p.name, 0) + n
        fits = Matcher(p.offer.capabilities(), p.offer.slots)
        self.pool.extend(_Slots(fits, p.offer.slots, p.offer.slots) for _ in range(n))


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def describe(requires: Mapping[str, str]) -> str:
    """A requirement class in words: `label gpu=yes, min_memory=8G`."""
    if not requires:
        return "no particular worker"
    parts = []
    for key, want in sorted(requires.items()):
        kind, _, name = key.partition(".")
        parts.append(
            f"{kind} {name}={want}" if kind in ("label", "env") and name else f"{key}={want}"
        )
    return ", ".join(parts)


def _timed_out(
    pending: Sequence[Launch], providers: Mapping[str, Provider], now: float
) -> tuple[list[Launch], list[str], list[str]]:
    live: list[Launch] = []
    give_up: list[str] = []
    reasons: list[str] = []
    for launch in pending:
        p = providers.get(launch.provider)
        if p is None:
            give_up.append(launch.id)
            reasons.append(f"launch {launch.id}: provider {launch.provider} is not configured")
        elif now - launch.started > p.join_timeout:
            give_up.append(launch.id)
            reasons.append(
                f"launch {launch.id} on provider {p.name} did not join within "
                f"{p.join_timeout:g} s: given up"
            )
        else:
            live.append(launch)
    return live, give_up, reasons


def _worker_slots(w: WorkerState, providers: Mapping[str, Provider]) -> _Slots:
    p = providers.get(w.provider) if w.provider else None
    caps = w.caps if w.caps is not None else (p.offer.capabilities() if p else {})
    free = max(w.slots - w.busy, 0)
    return _Slots(Matcher(caps, w.slots), free, w.slots, worker=w.id)


def _plan(
    workers: Sequence[WorkerState], providers: Mapping[str, Provider], live: Sequence[Launch]
) -> _Plan:
    counted = dict.fromkeys(providers, 0)
    active = dict.fromkeys(providers, 0)
    pool = [_worker_slots(w, providers) for w in workers if w.status in SERVING]
    for w in workers:
        if w.provider is not None and w.provider in providers and w.status not in GONE:
            counted[w.provider] += 1
            active[w.provider] += w.status != "draining"
    for launch in live:
        counted[launch.provider] += 1
        active[launch.provider] += 1
        offer = providers[launch.provider].offer
        pool.append(_Slots(Matcher(offer.capabilities(), offer.slots), offer.slots, offer.slots))
    return _Plan(providers, counted, active, pool)


def _take(plan: _Plan, requires: Mapping[str, str], tasks: int, launched: bool) -> int:
    """Hand `tasks` to free fitting slots of workers (or, with `launched`, of launches); return
    how many found none."""
    need = slots_needed(requires)
    for slots in plan.pool:
        if tasks == 0:
            break
        if slots.launch == launched and slots.free >= need and slots.fits(requires):
            n = min(tasks, slots.free // need)
            slots.free -= n * need
            slots.used = True
            tasks -= n
    return tasks


def _clears_soon(plan: _Plan, q: QueueClass, left: int, startup: float) -> bool:
    """Whether the busy fitting slots of connected workers would run `left` tasks before a
    new worker joins; launches are left out, so deciding again after launching agrees."""
    if q.expected_seconds is None:
        return False
    total = sum(s.total for s in plan.pool if not s.launch and s.fits(q.requires))
    if total < slots_needed(q.requires):
        return False
    waves = math.ceil(left * slots_needed(q.requires) / total)
    return waves * q.expected_seconds < startup


def _launches_needed(p: Provider, requires: Mapping[str, str], tasks: int) -> int:
    per_worker = p.offer.slots // slots_needed(requires)
    return math.ceil(tasks / per_worker) if per_worker else 0


def _fitting(plan: _Plan, requires: Mapping[str, str]) -> list[Provider]:
    return [
        p
        for p in plan.providers.values()
        if Matcher(p.offer.capabilities(), p.offer.slots)(requires)
    ]


def _scale_up(plan: _Plan, q: QueueClass, left: int, candidates: list[Provider]) -> None:
    what = f"{_plural(left, 'task')} need {describe(q.requires)}"
    candidates.sort(key=lambda p: (_launches_needed(p, q.requires, left), p.name))
    for p in candidates:
        if left == 0:
            break
        room = plan.room(p)
        n = min(_launches_needed(p, q.requires, left), room)
        if n == 0:
            plan.reasons.append(f"{what}; provider {p.name} can start no more now")
            continue
        plan.reasons.append(f"{what}; provider {p.name} can start {room} more: starting {n}")
        plan.start(p, n)
        left = _take(plan, q.requires, left, launched=True)
        what = f"{_plural(left, 'task')} still need {describe(q.requires)}"


def _serve(plan: _Plan, q: QueueClass) -> None:
    left = _take(plan, q.requires, q.tasks, launched=False)
    if not left:
        return
    what = f"{_plural(left, 'task')} need {describe(q.requires)}"
    candidates = _fitting(plan, q.requires)
    if not candidates:
        plan.reasons.append(f"{what}; no provider's workers could run them")
        return
    quickest = min(candidates, key=lambda p: p.startup)
    if _clears_soon(plan, q, left, quickest.startup):
        plan.reasons.append(
            f"{what}; the busy matching slots clear them before a worker of provider "
            f"{quickest.name} could join (~{quickest.startup:g} s)"
        )
        return
    left = _take(plan, q.requires, left, launched=True)
    if left:
        _scale_up(plan, q, left, candidates)


def _serve_queue(plan: _Plan, queue: Sequence[QueueClass]) -> None:
    # the most particular classes first, so tasks that run anywhere do not take the only
    # slots a particular class could use
    for q in sorted(queue, key=lambda q: (-len(q.requires), sorted(q.requires.items()))):
        _serve(plan, q)


def _keep_min(plan: _Plan) -> None:
    for p in plan.providers.values():
        short = p.min - plan.active[p.name] - plan.launches.get(p.name, 0)
        n = min(short, plan.room(p))
        if n > 0:
            plan.reasons.append(
                f"provider {p.name} keeps at least {_plural(p.min, 'worker')}: starting {n}"
            )
            plan.start(p, n)


def _idle_for(w: WorkerState, now: float) -> float:
    return now - w.idle_since if w.idle_since is not None else -1.0


def _drain(plan: _Plan, workers: Sequence[WorkerState], now: float) -> list[str]:
    used = {s.worker for s in plan.pool if s.used}
    drained: list[str] = []
    for w in sorted(workers, key=lambda w: (-_idle_for(w, now), w.id)):
        p = plan.providers.get(w.provider) if w.provider else None
        if p is None or w.status != "online" or w.busy > 0 or w.id in used:
            continue
        if _idle_for(w, now) <= p.idle_timeout:
            continue
        if plan.active[p.name] + plan.launches.get(p.name, 0) <= p.min:
            continue
        plan.active[p.name] -= 1
        drained.append(w.id)
        plan.reasons.append(
            f"worker {w.id} of provider {p.name} idle for {_idle_for(w, now):.0f} s "
            f"(idle_timeout {p.idle_timeout:g} s) and not needed: draining"
        )
    return drained


def decide(
    queue: Sequence[QueueClass],
    workers: Sequence[WorkerState],
    providers: Sequence[Provider],
    pending: Sequence[Launch],
    now: float,
) -> Decision:
    """What the autoscaler does now, given the queue, the workers, providers and launches."""
    by_name = {p.name: p for p in providers}
    live, give_up, reasons = _timed_out(pending, by_name, now)
    plan = _plan(workers, by_name, live)
    plan.reasons.extend(reasons)
    _serve_queue(plan, queue)
    _keep_min(plan)
    drain = _drain(plan, workers, now)
    launches = {name: n for name, n in sorted(plan.launches.items()) if n > 0}
    return Decision(launches, tuple(drain), tuple(give_up), tuple(plan.reasons))
