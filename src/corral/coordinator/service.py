"""The coordinator's behaviour: store calls plus the events that wake waiting requests.

Scheduling is driven by events, not a timer: a lease request that finds nothing waits on
`_work` until a submit, requeue or restart sets it. The only clock-driven loop is lease expiry,
which sleeps exactly until the earliest lease could run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable

import msgspec

from .._signal import Broadcast
from ..protocol import (
    FINAL_STATUSES,
    INLINE_LEASE_MAX,
    INLINE_MAX,
    INLINE_TOTAL,
    Event,
    Heartbeat,
    HeartbeatReply,
    JobCreate,
    JobCreated,
    LeaseGrant,
    LeaseRequest,
    ResultsReply,
    Task,
    TaskResult,
    TaskSpec,
    WorkerRegister,
    WorkerRegistered,
    result_problems,
    slots_needed,
    task_problems,
)
from ..protocol import Assignment as WireAssignment
from .access import JobTokens
from .autoscaler import autoscaler
from .blobs import Blobs
from .deps import inputs_from_dependencies, named_dependencies, resolve_after, waiting_text
from .errors import ApiError
from .fairshare import fair_share_text
from .group_commit import GroupCommit, GroupPolicy, wanted
from .leases import LeasePolicy
from .livelogs import LiveLogs, LiveSamples
from .metrics import Metrics
from .resume import Resume
from .retry import after_attempt, effective_max_attempts
from .scheduler import Matcher, pending_reason, programs_to_probe, requirement_problem
from .settings import Settings
from .speculation import Phase, SpeculationPolicy
from .stops import Stops
from .store import Leased, NewTask, NotFound, Outcome, Store
from .wakeups import Wakeups

log = logging.getLogger("corral.coordinator")


class Coordinator:
    """Jobs in, leases out, results back."""

    def __init__(
        self,
        store: Store,
        blobs: Blobs,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        store.fair_share_half_life = settings.fair_share_half_life  # charged and read by it
        self.blobs = blobs
        self.settings = settings
        self.clock = clock
        self.job_tokens = JobTokens(settings.job_key or secrets.token_bytes(32))
        self.policy = LeasePolicy(settings.lease_timeout, settings.heartbeat_interval)
        self.resume = Resume(store, blobs, clock)  # checkpoints (resume.py)
        self.speculation = SpeculationPolicy(
            settings.speculative_factor,
            settings.speculative_min_seconds,
            settings.speculative_done_fraction,
        )
        self._phases: tuple[float, list[Phase]] | None = None  # read at, phases
        # lease requests wait on _work, event streams on _events, heartbeats on _workers';
        # fired here, they wake the other coordinators on a shared database too (wakeups.py)
        self.wakeups = Wakeups(store)
        self._work = self.wakeups.work
        self._events = self.wakeups.events
        self._workers = self.wakeups.workers
        self._expiry: asyncio.Task[None] | None = None
        self._wake_expiry = Broadcast()
        self._expiry_at = math.inf  # when the expiry loop looks next
        self._closing = False
        self.logs = LiveLogs(settings.live_dir, store, blobs)
        self.stops = Stops(store, self.wakeups, clock)  # kill, drain, evict, retry (stops.py)
        self.samples = LiveSamples()  # running tasks' CPU and memory, from heartbeats
        # writes of requests that arrive together share a transaction (group_commit.py)
        grouping = GroupPolicy(wanted(settings.group_commit, store.shared))
        self.commits = GroupCommit(store, grouping)
        self.metrics = Metrics(store, blobs)  # GET /metrics (metrics.py)
        # --scale: starts and stops workers (autoscaler.py)
        self.autoscaler = autoscaler(store, self.stops, self.metrics, settings, clock)

    async def start(self) -> None:
        """Give leases from before a restart time to report back, then watch expiry."""
        self.store.grace_running(self.policy.expires(self.clock()))
        self._expiry = asyncio.create_task(self._expiry_loop())
        self.wakeups.start()
        if self.autoscaler is not None:
            await self.autoscaler.start()

    def release_waiters(self) -> None:
        """Answer every held long-poll now: the server is shutting down."""
        self._closing = True
        self._work.fire()
        self._events.fire()
        for signal in self._workers.values():
            signal.fire()

    async def stop(self) -> None:
        """Stop background work and wake every waiter."""
        if self.autoscaler is not None:
            await self.autoscaler.stop()
        await self.wakeups.stop()
        if self._expiry:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        self._work.fire()
        self._events.fire()

    # jobs
    def submit(self, body: JobCreate, owner: str) -> JobCreated:
        """Validate a whole job, then store it in one transaction."""
        self._validate(body.tasks, 0)
        job_id = uuid.uuid4().hex
        tasks = self._new_tasks(body.tasks, 0)
        now = self.clock()
        self.store.create_job(job_id, body.name, owner, now, tasks, body.speculative, body.priority)
        self._phases = None  # a new speculative job is looked at with the next lease
        if any("programs" in spec.requires for spec in body.tasks):
            self.wakeups.wake_all_workers()  # held heartbeats answer with a probe now
        self._work_arrived()
        job = msgspec.structs.asdict(self.store.get_job(job_id))
        return JobCreated(**job, task_ids=[t.id for t in tasks])

    def _validate(self, tasks: list[TaskSpec], already: int) -> None:
        if not tasks:
            raise ApiError("invalid_argument", "a job needs at least one task")
        if already + len(tasks) > self.settings.max_tasks_per_job:
            raise ApiError("too_large", f"at most {self.settings.max_tasks_per_job} tasks a job")
        hashes: set[str] = set()
        for i, spec in enumerate(tasks):
            problems = task_problems(spec)
            problems += [p for k, v in spec.requires.items() if (p := requirement_problem(k, v))]
            if problems:
                raise ApiError("invalid_argument", f"tasks[{i}].{problems[0]}")
            hashes.update(ref.sha256 for ref in spec.inputs.values())
        missing = self.blobs.missing(sorted(hashes))
        if missing:
            raise ApiError("invalid_argument", f"input blob {missing[0]} was never uploaded")

    def _new_tasks(self, specs: list[TaskSpec], first_seq: int) -> list[NewTask]:
        """Ids for new tasks; `after_index` resolved, and every dependency known (else 422)."""
        ids = [uuid.uuid4().hex for _ in specs]
        try:
            specs = resolve_after(specs, ids)
        except ValueError as exc:
            raise ApiError("invalid_argument", str(exc)) from exc
        for dep in named_dependencies(specs, ids):
            try:
                self.store.get_task(dep)
            except NotFound:
                raise ApiError("invalid_argument", f"after: no task {dep}") from None
        return [NewTask(ids[i], first_seq + i, spec) for i, spec in enumerate(specs)]

    def add_tasks(self, job_id: str, tasks: list[TaskSpec]) -> list[Task]:
        """Validate tasks, then append them to an existing job in one transaction."""
        total = self.store.get_job(job_id).total
        self._validate(tasks, total)
        new = self._new_tasks(tasks, total)
        self.store.add_tasks(job_id, self.clock(), new)
        self._work_arrived()
        return [self.store.get_task(t.id) for t in new]

    def _work_arrived(self) -> None:
        """New tasks: held lease calls look again, the autoscaler decides now, events go."""
        self._work.fire()
        if self.autoscaler is not None:
            self.autoscaler.wake()
        self._events.fire()

    async def changed(self, timeout: float) -> bool:
        """Wait until some task changes state, or `timeout` seconds (the dashboard's pages);
        False once the server is shutting down."""
        if not self._closing:
            await self._events.wait(timeout)
        return not self._closing

    # workers
    def register(self, body: WorkerRegister) -> WorkerRegistered:
        """Admit a worker."""
        if body.slots < 1:
            raise ApiError("invalid_argument", "slots must be at least 1")
        worker_id = uuid.uuid4().hex
        caps: dict[str, object] = dict(body.capabilities)
        self.store.register_worker(worker_id, body.name, body.slots, caps, self.clock())
        return WorkerRegistered(worker_id, self.settings.heartbeat_interval, self.policy.timeout)

    async def lease(self, worker_id: str, body: LeaseRequest) -> LeaseGrant:
        """Hand out queued tasks that fit this worker, waiting up to `body.wait` for some."""
        deadline = self.clock() + min(max(body.wait, 0.0), self.settings.max_lease_wait)
        # prefetch takes only what is queued now: a task that arrives while the request is
        # held goes to a worker with a free slot (or waits, and `why` says so)
        ahead = max(body.prefetch, 0) if body.prefetch_job else 0

        def first_pass() -> tuple[ResultsReply, list[Leased] | None]:
            # the results it carries and the first pass: one transaction (maybe shared)
            recorded = self.results(worker_id, body.results)
            return recorded, self._lease_once(worker_id, body, ahead, self.clock())

        recorded, got = await self.commits.run(first_pass)
        while True:
            now = self.clock()
            leased = got or []
            if got is None or leased or now >= deadline or self._closing:
                break
            # stragglers become worth a backup as time passes, with no event to wake on
            await self._work.wait(min(deadline - now, self._speculation_wait()))
            got = await self.commits.run(lambda: self._lease_once(worker_id, body, 0, self.clock()))
        self.metrics.leased(leased, now)
        if leased:  # the store recorded the worker as seen with the lease
            self._events.fire()
            if self.policy.wake_for(min(x.expires for x in leased), self._expiry_at):
                self._wake_expiry.fire()
        specs = [self._dependency_inputs(x.spec) for x in leased]
        # the queue's rows carry their job's owner (a backup attempt's is read)
        owners = {x.job_id: x.owner or self.store.job_owner(x.job_id) for x in leased}
        grant = LeaseGrant(
            [
                WireAssignment(
                    x.task_id,
                    x.job_id,
                    x.lease_id,
                    x.attempt,
                    x.expires,
                    spec,
                    self.job_tokens.mint(x.task_id, x.lease_id),
                    self._inline_inputs(spec),
                    owners[x.job_id],
                )
                for x, spec in zip(leased, specs, strict=True)
            ],
            recorded.stale,
            recorded.refused,
        )
        self.resume.attach(grant.assignments)
        return grant

    def _lease_once(
        self, worker_id: str, body: LeaseRequest, ahead: int, now: float
    ) -> list[Leased] | None:
        """One pass: the tasks leased, or None when the worker is draining (answer now)."""
        # read afresh each time: probed programs, a drain or freed slots may have changed it
        worker = self.store.get_worker(worker_id)
        if worker.status == "draining":
            return None
        # nothing for a lost worker: this may be the poll it left open when it fell silent,
        # which would take back the very task its expiry just requeued (until it heartbeats)
        if worker.status == "lost":
            return []
        fits = Matcher(worker.capabilities, worker.slots)
        expires = self.policy.expires(now)
        scan = self.settings.lease_scan
        room = min(max(body.max, 0), worker.slots - worker.slots_used)
        leased = self.store.lease(worker_id, room, now, expires, scan, fits, None, fits.peak_fits)
        taken = sum(slots_needed(x.spec.requires) for x in leased)
        if taken < room:  # no queued work left for it: perhaps a straggler to back up
            leased += self._backups(worker_id, room - taken, now, fits)
        ahead = min(ahead, self.settings.max_prefetch_per_slot * worker.slots)
        if ahead > 0:
            taken = sum(slots_needed(x.spec.requires) for x in leased)
            more = min(max(body.max, 0), worker.slots + ahead - worker.slots_used) - taken
            leased += self.store.lease(
                worker_id, more, now, expires, scan, fits, body.prefetch_job, fits.peak_fits
            )
        return leased

    def _speculative_phases(self, now: float) -> list[Phase]:
        """The running speculative phases, read at most every `speculative_interval`."""
        if self._phases is None or now - self._phases[0] >= self.settings.speculative_interval:
            self._phases = (now, self.store.speculative_phases())
        return self._phases[1]

    def _speculation_wait(self) -> float:
        """How long a lease request with nothing to hand out waits before looking again."""
        phases = self._phases[1] if self._phases is not None else []
        return self.settings.speculative_interval if phases else self.settings.max_lease_wait

    def _backups(
        self, worker_id: str, room: int, now: float, fits: Callable[[dict[str, str]], bool]
    ) -> list[Leased]:
        """Backup attempts of stragglers this worker does not run, within its room."""
        out: list[Leased] = []
        for run in self.speculation.candidates(self._speculative_phases(now), now, worker_id):
            need = slots_needed(run.requires)
            if need > room or not fits(run.requires):
                continue
            got = self.store.grant_backup(run.task_id, worker_id, now, self.policy.expires(now))
            if got is not None:
                log.info("task %s: backup attempt on worker %s", run.task_id, worker_id)
                self._phases = None  # read afresh: this one is backed up now
                out.append(got)
                room -= need
            if room <= 0:
                break
        return out

    def _dependency_inputs(self, spec: TaskSpec) -> TaskSpec:
        """Files the task's dependencies returned, staged as its inputs (`after_inputs`)."""
        wanted = {ref.task for ref in spec.after_inputs.values()}
        manifests = {t: self.store.get_task(t).manifest for t in wanted}
        return inputs_from_dependencies(spec, manifests)

    async def heartbeat(self, worker_id: str, body: Heartbeat) -> HeartbeatReply:
        """Extend leases; answer at once with stale ones, or wait up to `wait` for a kill."""
        current = self.store.get_worker(worker_id)
        told_to_drain = current.status == "draining" and not body.draining
        status = "draining" if body.draining or told_to_drain else body.status
        caps = None
        if body.capabilities:  # heartbeats carry only what changes: merge it in
            caps = {**current.capabilities, **body.capabilities}
            if caps.get("programs") != current.capabilities.get("programs"):
                self._work.fire()  # newly found programs may let waiting tasks match
        self.store.touch_worker(worker_id, self.clock(), status, caps)
        stale = self._extend(worker_id, body.leases)
        live = set(body.leases).difference(stale)
        if body.logs:  # a backup attempt's output shows once it is recorded, not live
            live -= self.store.backup_leases(worker_id)
        for chunk in body.logs:
            # a worker back from a partition must not write into a newer attempt's output
            if chunk.lease_id in live:
                self.logs.append(chunk)
        # hold only when the worker already knows which of its tasks are blocked or evicted
        known = set(body.blocked) == set(self.store.blocked_tasks(worker_id))
        evicting = set(body.evicting)
        known = known and evicting.issuperset(self.store.evictions(worker_id))
        if not stale and body.wait > 0 and not self._closing and known:
            wait = min(body.wait, self.settings.heartbeat_interval * 2)
            stale = await self._hold(worker_id, body.leases, wait, evicting)
        return self._reply(worker_id, stale)

    async def _hold(
        self, worker_id: str, leases: list[str], wait: float, evicting: set[str]
    ) -> list[str]:
        """Hold a heartbeat until a kill, drain, eviction or block wakes it, or `wait` runs
        out; the stale leases then. On a shared database, a kill, drain or eviction made on
        another coordinator whose announcement was lost is found by looking every `recheck`
        seconds."""
        signal = self._workers.setdefault(worker_id, Broadcast())
        deadline = self.clock() + wait
        recheck = self.wakeups.recheck or wait
        while True:
            fired = await signal.wait(max(min(deadline - self.clock(), recheck), 0.0))
            stale = self._extend(worker_id, leases)
            if fired or stale or self._closing or self.clock() >= deadline:
                return stale
            if self.store.get_worker(worker_id).status == "draining":
                return stale
            if not evicting.issuperset(self.store.evictions(worker_id)):
                return stale

    def _reply(self, worker_id: str, stale: list[str]) -> HeartbeatReply:
        worker = self.store.get_worker(worker_id)
        probe = programs_to_probe(self.store.queued_requirements(), worker.capabilities)
        blocked = self.store.blocked_tasks(worker_id)
        drain, evict = worker.status == "draining", self.store.evictions(worker_id)
        return HeartbeatReply(stale, probe, drain=drain, blocked=blocked, evict=evict)

    def set_blocked(self, task_id: str, blocked: bool) -> None:
        """A running task waits on its children (or stops waiting): its worker is told at once
        through its held heartbeat, and may lease more work into the blocked task's slots."""
        worker_id = self.store.set_blocked(task_id, blocked)
        if worker_id is None:
            raise ApiError("conflict", f"task {task_id} is not running")
        self._wake_worker(worker_id)
        self._work.fire()

    def pending_reason(self, task: Task) -> str | None:
        """Why a queued task is not running, in plain words; None for other tasks."""
        if task.status != "queued":
            return None
        if task.after and (left := self.store.dependencies_left(task.id)):
            return waiting_text(left)
        workers = self.store.list_workers()
        now = self.clock()
        owner = self.store.job_owner(task.job_id)
        waiting = self.store.fair_share(now).values()
        fair = fair_share_text(owner, list(waiting), self.settings.fair_share_half_life)
        return pending_reason(task.requires, workers, now, task.not_before, fair)

    def _extend(self, worker_id: str, leases: list[str]) -> list[str]:
        now = self.clock()
        return self.store.extend(worker_id, leases, now, self.policy.expires(now))

    def deregister(self, worker_id: str) -> None:
        """A worker left cleanly; leases it still held run out through expiry as usual."""
        self.store.get_worker(worker_id)
        self.store.set_worker_status(worker_id, "gone")
        self._wake_worker(worker_id)

    def _wake_worker(self, worker_id: str) -> None:
        self.wakeups.wake_worker(worker_id)

    def result(self, task_id: str, body: TaskResult) -> Task:
        """Record a finished attempt; a stale lease gets 409 and changes nothing."""
        task = self.store.get_task(task_id)
        problem = self.store_inline(body.inline) or self._blob_problem(body)
        if problem:
            raise ApiError("invalid_argument", problem)
        now = self.clock()
        outcome = self._outcome(task, body, now)
        backed = self.store.backup_holders([task_id])
        if not self.store.finish(task_id, body.lease_id, outcome, now):
            raise ApiError(
                "stale_lease",
                f"lease {body.lease_id} no longer holds task {task_id} (status {task.status})",
            )
        self._wake_attempts({task_id: task}, backed)
        self.metrics.finished([(task, outcome.status)], now)
        self._grant_outputs([(task.job_id, outcome)])
        self.resume.after([(task_id, body, outcome.status == "succeeded")])
        self._finished(retry=outcome.not_before is not None)
        return self.store.get_task(task_id)

    def results(self, worker_id: str, results: dict[str, TaskResult]) -> ResultsReply:
        """Record several finished attempts of one worker in one transaction. A result whose
        lease is stale (or not this worker's) changes nothing and is listed as stale; a
        malformed one is listed as refused, and the others still count."""
        if not results:
            return ResultsReply()
        tasks = self.store.get_tasks(list(results))
        now = self.clock()
        refused: dict[str, str] = {}
        items: list[tuple[str, str, Outcome]] = []
        for task_id, body in results.items():
            task = tasks.get(task_id)
            problem = (
                next(iter(result_problems(body)), None)
                or self.store_inline(body.inline)
                or self._blob_problem(body)
            )
            if task is None or problem:
                refused[task_id] = problem or f"no task {task_id}"
            else:
                items.append((task_id, body.lease_id, self._outcome(task, body, now)))
        backed = self.store.backup_holders([t for t, _, _ in items])
        recorded = self.store.finish_many(worker_id, items, now, backed.keys())
        stale = [item[0] for item, ok in zip(items, recorded, strict=True) if not ok]
        done = [item for item, ok in zip(items, recorded, strict=True) if ok]
        self._wake_attempts(tasks, backed)
        self.metrics.finished([(tasks[t], o.status) for t, _, o in done], now)
        self._grant_outputs([(tasks[t].job_id, o) for t, _, o in done])
        self.resume.after([(t, results[t], o.status == "succeeded") for t, _, o in done])
        if done:
            self._finished(retry=any(o.not_before is not None for _, _, o in done))
        return ResultsReply(stale, refused)

    def _wake_attempts(self, tasks: dict[str, Task], backed: dict[str, str]) -> None:
        """Both workers of a task that had a backup attempt: the held heartbeat of the one
        whose attempt lost learns at once that its lease is stale, and kills it."""
        for task_id, backup_worker in backed.items():
            self._wake_worker(backup_worker)
            primary = tasks[task_id].worker_id
            if primary:
                self._wake_worker(primary)
        if backed:
            self._work.fire()  # a slot freed, or a promoted backup

    def _grant_outputs(self, outcomes: list[tuple[str, Outcome]]) -> None:
        """The job's owner may read what its tasks produced."""
        by_job: dict[str, set[str]] = {}
        for job_id, o in outcomes:
            made = [o.stdout, o.stderr, *(f.sha256 for f in o.manifest.values())]
            by_job.setdefault(job_id, set()).update(h for h in made if h)
        for job_id, hashes in by_job.items():
            if hashes:
                self.store.grant_blobs(self.store.job_owner(job_id), sorted(hashes))

    def store_inline(self, inline: dict[str, bytes]) -> str | None:
        """Store small blobs that came inside a body; the first problem, storing none, if
        one is too large or does not hash to its name."""
        for sha, data in inline.items():
            if len(data) > INLINE_MAX:
                return f"inline blob {sha} is over {INLINE_MAX} bytes: upload it on its own"
            if hashlib.sha256(data).hexdigest() != sha:
                return f"inline blob {sha} does not hash to its name"
        for data in inline.values():
            self.blobs.put_bytes(data)
        return None

    def _inline_inputs(self, spec: TaskSpec) -> dict[str, bytes]:
        """Small input blobs, sent with the lease so the worker need not fetch them."""
        out: dict[str, bytes] = {}
        for ref in spec.inputs.values():
            if ref.size <= INLINE_LEASE_MAX and ref.sha256 not in out:
                data = self.blobs.small(ref.sha256, INLINE_LEASE_MAX)
                if data is not None:
                    out[ref.sha256] = data
        return out

    def event_detail(self, event: Event) -> Event:
        """A final event with its task and small output files (and stderr when it failed)."""
        if event.status not in FINAL_STATUSES:
            return event
        try:
            task = self.store.get_task(event.task_id)
        except NotFound:
            return event
        wanted = [f.sha256 for f in task.manifest.values() if f.size <= INLINE_MAX]
        if task.stderr and task.status != "succeeded":
            wanted.append(task.stderr)
        files: dict[str, bytes] = {}
        budget = INLINE_TOTAL  # a client fetches what does not fit on its own
        for sha in wanted:
            data = self.blobs.small(sha, min(INLINE_MAX, budget))
            if data is not None:
                files[sha] = data
                budget -= len(data)
        return msgspec.structs.replace(event, task=task, files=files)

    def _blob_problem(self, body: TaskResult) -> str | None:
        for sha in (body.stdout, body.stderr, *(f.sha256 for f in body.manifest.values())):
            if sha is not None and not self.blobs.has(sha):
                return f"blob {sha} was never uploaded"
        return None

    def _outcome(self, task: Task, body: TaskResult, now: float) -> Outcome:
        tries = effective_max_attempts(task.max_attempts, task.retries)
        decision = after_attempt(
            body.exit_code, body.error, task.attempts, tries, task.retries, now
        )
        return Outcome(
            decision.status,
            body.exit_code,
            decision.error,
            body.stdout,
            body.stderr,
            body.manifest,
            decision.not_before,
            body.peak_memory,
            body.cpu_seconds,
        )

    def _finished(self, retry: bool) -> None:
        self._events.fire()
        self._work.fire()  # its dependents may have become leasable
        if retry:
            self._wake_expiry.fire()  # the expiry loop also wakes retries when they are due

    # expiry
    async def _expiry_loop(self) -> None:
        while True:
            now = self.clock()
            for worker_id in self.store.mark_lost_workers(self.policy.lost_before(now)):
                self._wake_worker(worker_id)
            if self.store.expire(now):
                self._work.fire()
                self._events.fire()
            if self.store.release_due(now):
                self._work.fire()
            due = [t for t in (self.store.next_expiry(), self.store.next_not_before()) if t]
            delay = self.policy.next_check(self.clock(), min(due, default=None))
            self._expiry_at = self.clock() + delay
            await self._wake_expiry.wait(delay)

    # events and logs
    async def events(
        self, job_id: str, after: int, keepalive: float
    ) -> AsyncIterator[Event | None]:
        """A job's events from `after` on; None marks a keepalive; ends when the job is done."""
        self.store.job_owner(job_id)  # NotFound for no such job
        while True:
            batch = self.store.events(job_id, after, 500)
            for event in batch:
                after = event.seq
                yield event
            if batch:
                continue
            if self._closing or self.store.job_finished(job_id):
                return
            await self._events.wait(keepalive)
            yield None
