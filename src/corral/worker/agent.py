"""The worker agent: register, then pull leases, run tasks, return results. Outbound only.

Three loops share one link to the coordinator (_link.py: a WebSocket channel, HTTP when it is
not open):
- the lease loop long-polls for as many tasks as there are free slots;
- the heartbeat loop extends leases, carries live output, and learns of kills, drains and
  evictions at once (the coordinator holds each heartbeat open until it has something to
  say);
- one asyncio task per held task waits for its slots, then stages inputs, runs the process
  and reports back (_attempt.py).

What the worker holds and every decision about it (free slots, what to ask for, what may
start, what goes back, which inline blobs stay) is the worker state's (state.py): this module
turns events into calls on it and its answers into requests, processes and files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from .._loop import run_async
from ..protocol import (
    Assignment,
    Heartbeat,
    HeartbeatReply,
    LeaseGrant,
    LeaseRequest,
    LogChunk,
    ReleaseReason,
    TaskResult,
    WorkerRegister,
    WorkerRegistered,
)
from ._aio import Broadcast, Sweeper, with_pidfd_watcher
from ._attempt import Attempts, TaskRun
from ._link import BACKOFF, Link, heartbeat_read_timeout, refusal
from .allowlist import AllowPolicy, allow_mode, is_loopback_url
from .cache import FileCache
from .capabilities import dynamic_capabilities, probe_programs, static_capabilities
from .config import WorkerConfig, WorkerRefused, sandbox_refusal
from .desktop import Desktop
from .eviction import on_signal
from .executor import TaskProcess
from .fnpool import FnPool
from .guard import make_guard
from .reporting import Outbox
from .sandbox import probe
from .state import WorkerState
from .taskuser import TaskUsers
from .usage import Sampler

__all__ = ["Agent", "run_worker"]

log = logging.getLogger("corral.worker")
_LOG_CHUNK = 64 * 1024


class Agent:
    """One worker process."""

    def __init__(self, config: WorkerConfig) -> None:
        if config.sandbox and not is_loopback_url(config.server):  # before anything else
            found = probe(config.work_dir)  # make_guard probes again: only off loopback
            refused = sandbox_refusal(config.server, True, found, shutil.which("bwrap") is not None)
            if refused:
                raise WorkerRefused(refused)
        self.config = config
        self.heartbeat_interval = 2.0
        self.desktop = Desktop(config.when_idle) if config.when_idle else None
        # never leased ahead of the slots in desktop mode (the owner may come back)
        self.state = WorkerState(config.slots, prefetch=self.desktop is None)
        self.link = Link(config, self.state)
        config.work_dir.mkdir(parents=True, exist_ok=True)
        self.cache = FileCache(config.work_dir / "cache", self.link.fetch, config.cache_size)
        mode = allow_mode(config.server, config.allow_all, config.enforce_allowlist, config.allow)
        self.guard = make_guard(
            config.work_dir,
            AllowPolicy(mode, set(config.allow), own_inline=set(config.allow_inline)),
            config.allow_network,
            config.hide,
            config.sandbox,
            config.expose,
            TaskUsers.choose(config.task_uids, config.task_user, root=os.geteuid() == 0),
            config.expose_rw,
        )
        self.runs: dict[str, TaskRun] = {}  # the I/O side of the state's tasks, by task id
        self.sampler = Sampler()  # their live CPU and memory, sent with heartbeats
        self._programs = list(config.programs)
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # tasks leased beyond the free slots wait for one here (prefetch.py)
        self._gate = Broadcast()
        self.sweeper = Sweeper()  # finished tasks' directories, removed in a thread
        # finished attempts not yet recorded: the next lease call carries them, or the
        # outbox's own loop sends them when no lease call is coming (reporting.py)
        self.outbox = Outbox(self._remove, self.state.remember_stored, lambda: self.state.executing)
        self.fnpool = FnPool(
            self.guard,
            config.work_dir,
            config.slots,
            self.state.tasks.__contains__,
            config.keep_task_dirs,
            self.sweeper,
        )
        self.attempts = Attempts(config, self.state, self.link, self.cache, self.guard, self.fnpool)

    # lifecycle
    async def register(self) -> None:
        """Introduce this worker, retrying until the coordinator answers."""
        caps = static_capabilities(
            self.config.work_dir, self.config.labels, self.config.programs, self.config.slots
        )
        caps.update(self.guard.capabilities())
        caps.update(self._reported_caps())
        body = WorkerRegister(self.config.name, self.config.slots, caps)
        delay = 0.2
        while not self._stopping.is_set():
            try:
                reply = await self.link.post("/workers", body, WorkerRegistered)
            except httpx.HTTPError as exc:
                log.warning("cannot register with %s: %s", self.config.server, exc)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.link.worker_id = reply.id
            self.state.stored.clear()  # perhaps another coordinator: confirm blobs afresh
            self.heartbeat_interval = reply.heartbeat_interval
            log.info("registered as %s (%s)", reply.id, self.config.name)
            await self.link.refresh_allowlist(self.guard)
            return

    async def run(self) -> None:
        """Work until asked to stop, then finish (or evict) running tasks and leave."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._signalled, sig)
        self.link.channel.start()
        await self.register()
        beats = asyncio.create_task(self._heartbeat_loop())
        reports = asyncio.create_task(self.outbox.loop(self.link.send, BACKOFF))
        idle = asyncio.create_task(self._desktop_loop()) if self.desktop else None
        try:
            await self._lease_loop()
            while self.state.tasks:
                await self._slot_free.wait()
                self._slot_free.clear()
            await self.outbox.flush(self.link.send, BACKOFF)
            await self.sweeper.wait()
        finally:
            for loop_task in (beats, reports, idle):
                if loop_task is not None:
                    loop_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await loop_task
            if self.link.worker_id:
                with contextlib.suppress(httpx.HTTPError):
                    await self.link.http.post(f"/workers/{self.link.worker_id}/deregister")
            await self.link.aclose()
            await self.fnpool.aclose()
            self.guard.close()

    def drain(self) -> None:
        """Take no new tasks; finish the running ones, then exit."""
        log.info("draining: %d task(s) still running", len(self.state.tasks))
        self._stopping.set()
        self._slot_free.set()
        self.state.drain()  # prefetched, not started: back to the queue
        self._gate.fire()

    def shutdown(self) -> None:
        """Take no new tasks; evict the running ones (their checkpoints saved, given back),
        then exit."""
        self.drain()
        self._evict(self.state.leases(), "shutdown")

    def _signalled(self, signum: int) -> None:
        if on_signal(signum, self._stopping.is_set()) == "drain":
            self.drain()
        else:
            log.info("signal %d: evicting %d task(s), then leaving", signum, len(self.runs))
            self.shutdown()

    def _evict(self, lease_ids: list[str], reason: ReleaseReason) -> None:
        """Evict these leases' tasks (eviction.py): the waiting ones go back at once, the
        running ones once their process has ended and their checkpoint is saved."""
        grace = self.config.checkpoint_grace
        for task_id in self.state.evict(lease_ids, reason, time.monotonic(), grace):
            task = asyncio.create_task(self._terminate(self.runs[task_id]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._gate.fire()  # the waiting ones stop waiting for a slot

    async def _terminate(self, run: TaskRun) -> None:
        task_id = run.assignment.task_id
        log.info("task %s evicted (%s): SIGTERM", task_id, run.held.reason)
        if not await run.process.terminate(self.state.evict_in(task_id, time.monotonic())):
            log.warning("task %s still ran after its grace period: killed", task_id)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _lease_loop(self) -> None:
        while not self._stopping.is_set():
            ask = self.state.lease_ask(time.monotonic())
            if ask is None:
                await self._slot_free.wait()
                self._slot_free.clear()
                continue
            if self.desktop and not self.desktop.may_start:
                await self.desktop.until_idle(self._stopping)
                continue
            # the results finished since the last call ride along: one request reports them
            # and asks for their slots' next tasks
            results = self.outbox.take()
            lease = asyncio.create_task(
                self.link.post(
                    f"/workers/{self.link.worker_id}/lease",
                    LeaseRequest(
                        max=ask.max,
                        wait=self.config.lease_wait,
                        results=results,
                        prefetch=ask.prefetch,
                        prefetch_job=ask.prefetch_job,
                    ),
                    LeaseGrant,
                )
            )
            stop = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({lease, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not lease.done():
                # draining: a grant already on its way is still honoured
                lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._start_grant(lease, results)

    async def _start_grant(
        self, lease: asyncio.Task[LeaseGrant], results: dict[str, TaskResult]
    ) -> None:
        try:
            grant = await lease
        except httpx.HTTPStatusError as exc:
            reply = refusal(exc, results)
            if reply is None:
                self.outbox.give_back(results)
            else:
                self.outbox.answered(results, reply.stale, reply.refused)
            if exc.response.status_code == 404:
                await self.register()
            else:
                log.warning("lease refused: %s", exc.response.text)
                await self._sleep(1.0)
            return
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            self.outbox.give_back(results)  # perhaps recorded: sent again, they are then stale
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.warning("lease failed: %s", exc)
            await self._sleep(1.0)
            return
        self.outbox.answered(results, grant.stale, grant.refused)
        for assignment in grant.assignments:
            if self.desktop and not self.desktop.may_start:
                # the owner came back while the request was held: hand it straight back
                await self.link.release(assignment)
                continue
            self._accept(assignment)
        await asyncio.sleep(0)  # the new tasks reach their slot wait before slots are counted

    def _accept(self, a: Assignment) -> None:
        """Hold a leased task (its slots and inline blobs, state.py) and start its asyncio
        task, which waits for a slot."""
        held = self.state.granted(a, time.monotonic())
        run = TaskRun(
            held, TaskProcess(), self.config.work_dir / "tasks" / f"{a.task_id}.{a.attempt}"
        )
        self.runs[a.task_id] = run
        task = asyncio.create_task(self._run_task(run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heartbeat_loop(self) -> None:
        while True:
            body = Heartbeat(
                # a cancelled lease is not presented again: the coordinator answers stale
                # leases at once, so re-sending one would spin this loop until the task ends
                leases=self.state.leases() + self.outbox.leases(),
                logs=self._log_chunks(),
                capabilities={
                    **dynamic_capabilities(self.config.work_dir),
                    **self._reported_caps(),
                },
                wait=self.heartbeat_interval,
                draining=self._stopping.is_set(),
                blocked=sorted(self.state.blocked),
                evicting=self.state.evicting(),
                status=self.desktop.status if self.desktop else "online",
                usage=self.sampler.sample(self.state.presented(), self.runs),  # usage.py
            )
            try:
                reply = await self.link.post(
                    f"/workers/{self.link.worker_id}/heartbeat",
                    body,
                    HeartbeatReply,
                    read=heartbeat_read_timeout(self.heartbeat_interval),
                )
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 404:
                    await self.register()
                await asyncio.sleep(self.heartbeat_interval)
                continue
            except httpx.HTTPError:
                await asyncio.sleep(self.heartbeat_interval / 2)
                continue
            self._sent(body.logs)
            self._cancel(reply.cancel)
            self._follow(reply)
            # blocked tasks lend their slots (client/_current.py): recount, maybe start some
            if self.state.set_blocked(reply.blocked):
                self._slot_free.set()
                self._gate.fire()

    async def _desktop_loop(self) -> None:
        """Desktop mode: suspend, resume and give back tasks as the owner comes and goes."""
        assert self.desktop is not None

        def tasks() -> dict[str, TaskProcess]:
            ids = [h.assignment.task_id for h in self.state.lent()]
            return {t: self.runs[t].process for t in ids}

        await self.desktop.run(tasks, self._give_back, self._slot_free.set)

    async def _give_back(self, task_id: str) -> None:
        """The owner needs the machine: evict the task (`_run_task` then hands it back)."""
        run = self.runs.get(task_id)
        if run is not None:
            self._evict([run.assignment.lease_id], "owner")

    def _reported_caps(self) -> dict[str, Any]:
        """Programs looked for so far, the env exposed to tasks, and cache counters."""
        return {
            **probe_programs(self._programs),
            "env": self.config.expose_env,
            "cache": self.cache.stats(),
        }

    def _follow(self, reply: HeartbeatReply) -> None:
        """Look for programs the coordinator asks about; drain when the operator asks."""
        new = [p for p in reply.probe if p not in self._programs]
        if new:
            log.info("looking for programs on PATH: %s", ", ".join(new))
            self._programs += new  # reported with the next heartbeat, sent at once
        if reply.drain and not self._stopping.is_set():
            log.info("the coordinator asked this worker to drain")
            self.drain()
        if reply.evict:
            self._evict(reply.evict, "evicted")

    def _cancel(self, lease_ids: list[str]) -> None:
        self.outbox.drop_stale(lease_ids)  # finished, not yet (or being) reported
        for task_id in self.state.cancel(lease_ids):
            log.info("task %s cancelled by the coordinator", task_id)
            self.runs[task_id].process.kill()
            self._gate.fire()

    def _log_chunks(self) -> list[LogChunk]:
        chunks = []
        for held in self.state.presented():
            run = self.runs[held.assignment.task_id]
            for stream, offset in run.log_offsets.items():
                path = run.dir / stream
                with contextlib.suppress(OSError), path.open("rb") as f:
                    f.seek(offset)
                    data = f.read(_LOG_CHUNK)
                    if data:
                        a = run.assignment
                        chunks.append(LogChunk(a.task_id, a.lease_id, stream, offset, data))  # type: ignore[arg-type]
        return chunks

    def _sent(self, chunks: list[LogChunk]) -> None:
        """Output counts as sent only once a heartbeat carrying it was answered."""
        for chunk in chunks:
            run = self.runs.get(chunk.task_id)
            if run is not None and run.assignment.lease_id == chunk.lease_id:
                run.log_offsets[chunk.stream] = chunk.offset + len(chunk.data)

    # one task
    async def _run_task(self, run: TaskRun) -> None:
        a = run.assignment
        started, ran, result = False, False, None
        try:
            if await self._wait_for_slot(run):
                started = True
                # a function task going to a pooled runner lives in its root (fnpool.py); the
                # seat is claimed only now that the task has a slot (it may have been prefetched)
                inside = self.attempts.inside(a)  # inputs its runner would write itself
                run.dir = self.fnpool.claim(a, shared=inside is not None)
                run.inside = inside if self.fnpool.claimed(a) else None
                result = await self.attempts.execute(run, run.dir / "work")
                ran = True  # its run time counts towards prefetch
        except httpx.TransportError as exc:
            # not the task's fault: stop presenting the lease so it expires and is requeued
            log.warning("abandoning task %s: coordinator unreachable: %s", a.task_id, exc)
        except Exception as exc:  # a worker bug must not take the worker down
            log.exception("task %s failed in the worker", a.task_id)
            result = TaskResult(a.lease_id, None, error=f"worker: {exc}")
        finally:
            self.state.finished(a, time.monotonic(), ran)
            self.attempts.checkpoints.forget(a)
            if self.runs.get(a.task_id) is run:
                del self.runs[a.task_id]
            self._gate.fire()
            if result is not None and run.held.presented:  # its directory goes once answered
                self.outbox.put(a.task_id, result, run.dir)
            elif started:
                self._remove(run.dir, now=run.held.released)
            self._slot_free.set()  # the lease loop takes the result with its next call
        if run.held.released:  # after the cleanup: the task may come back here with this attempt
            await self.link.release(a, run.held.reason)

    def _remove(self, task_dir: Path, now: bool = False) -> None:
        """Delete a finished task's directory: in a thread, off the path of the next task
        (on a busy disk each rmdir can take a millisecond); at once when the same attempt may
        come back here (a task given back)."""
        if self.fnpool.owns(task_dir):  # a link to its seat's own (fnpool.py)
            self.fnpool.unlink(task_dir)
            return
        if self.config.keep_task_dirs:
            return
        if now:
            shutil.rmtree(task_dir, ignore_errors=True)
            return
        self.sweeper.remove(task_dir)

    async def _wait_for_slot(self, run: TaskRun) -> bool:
        """Wait until the task fits beside the executing ones (it may have been leased ahead
        of the slots); False when it was cancelled or given back meanwhile, or waited too long
        (then it is given back)."""
        task_id = run.assignment.task_id
        while True:
            now = time.monotonic()
            step = self.state.try_start(task_id, now)
            if step != "waiting":
                break
            await self._gate.wait(self.state.give_back_in(task_id, now))
        if step == "expired":
            log.info("task %s found no free slot: giving it back", task_id)
        return step == "started"


def run_worker(config: WorkerConfig) -> None:
    """Run a worker until SIGINT has drained it or SIGTERM evicted its tasks (eviction.py);
    exit in one line if it may not start."""
    try:
        agent = Agent(config)
    except WorkerRefused as exc:
        raise SystemExit(f"corral worker: {exc}") from None
    run_async(with_pidfd_watcher(agent.run()))
