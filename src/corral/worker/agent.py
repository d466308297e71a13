"""The worker agent: register, then pull leases, run tasks, return results. Outbound only.

Three loops share one HTTP client:
- the lease loop long-polls for as many tasks as there are free slots;
- the heartbeat loop extends leases, carries live output, and learns of kills at once
  (the coordinator holds each heartbeat open until it has something to say);
- one asyncio task per running task stages inputs, runs the process and reports back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from ..protocol import (
    INLINE_MAX,
    INLINE_TOTAL,
    AllowEntry,
    Assignment,
    Heartbeat,
    HeartbeatReply,
    LeaseGrant,
    LeaseRequest,
    LogChunk,
    MissingBlobs,
    MissingBlobsReply,
    OutputFile,
    ResultsReply,
    TaskRelease,
    TaskResult,
    WorkerRegister,
    WorkerRegistered,
    WorkerResults,
    slots_needed,
)
from ._aio import Broadcast, maybe_thread, with_pidfd_watcher
from .allowlist import AllowPolicy, allow_mode
from .cache import CacheError, FileCache
from .capabilities import dynamic_capabilities, probe_programs, static_capabilities
from .config import WorkerConfig, client_env, tls_verify
from .desktop import Desktop
from .executor import TaskProcess, command_line, task_env
from .fnpool import FnPool
from .guard import Launch, make_guard
from .outputs import UnsafePath, changed_files, resolve_inside, safe_relpath, sha256_file, snapshot
from .prefetch import GIVE_BACK, RunTimes, prefetch_room, worth_asking
from .pyrunner import runner_argv
from .reporting import Outbox

log = logging.getLogger("corral.worker")
T = TypeVar("T")


_LOG_CHUNK = 64 * 1024
_STORED_MAX = 4096
_INLINE_HASH = 256 * 1024  # files up to this size are hashed without a thread hop
_BACKOFF = (0.2, 0.5, 1, 2, 4, 8, 8, 8, 15, 15)


@dataclass
class _Running:
    assignment: Assignment
    process: TaskProcess
    dir: Path
    log_offsets: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    cancelled: bool = False
    released: bool = False  # given back to the queue (desktop mode): no result, no lease


class Agent:
    """One worker process."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.worker_id: str | None = None
        self.heartbeat_interval = 2.0
        headers = {"authorization": f"Bearer {config.token}"} if config.token else {}
        self.http = httpx.AsyncClient(
            base_url=config.server.rstrip("/") + "/api/v1",
            headers=headers,
            timeout=httpx.Timeout(30.0, read=config.lease_wait + 30.0),
            verify=tls_verify(config.server, config.ca_file),
        )
        config.work_dir.mkdir(parents=True, exist_ok=True)
        self.cache = FileCache(config.work_dir / "cache", self._fetch, config.cache_size)
        mode = allow_mode(config.server, config.allow_all, config.enforce_allowlist, config.allow)
        self.guard = make_guard(
            config.work_dir,
            AllowPolicy(mode, set(config.allow)),
            config.allow_network,
            config.hide,
            config.sandbox,
            config.expose,
        )
        self.running: dict[str, _Running] = {}
        self._programs = list(config.programs)
        self._slot_free = asyncio.Event()
        self._blocked: set[str] = set()  # tasks waiting on their children: slots free
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # blobs the coordinator has confirmed it holds (blobs are never deleted there): most
        # tasks' stdout and stderr are the same empty blob, which then costs no round trip
        self._stored: set[str] = set()
        self._inline: dict[str, bytes] = {}  # small inputs that came with leases, by sha256
        # leased tasks beyond the free slots wait for one here (prefetch.py)
        self._executing: dict[str, float] = {}  # task id -> when it started
        self._gate = Broadcast()
        self._times = RunTimes()
        self._short_job = ""
        self._removals: set[asyncio.Future[None]] = set()
        # finished attempts not yet recorded: the next lease call carries them, or the
        # outbox's own loop sends them when no lease call is coming (reporting.py)
        self.outbox = Outbox(self._remove, self._remember_stored, lambda: bool(self._executing))
        self.desktop = Desktop(config.when_idle) if config.when_idle else None
        self.fnpool = FnPool(
            self.guard,
            config.work_dir,
            config.slots,
            self.running.__contains__,
            config.keep_task_dirs,
        )

    # plumbing
    async def _post(self, path: str, body: Any, kind: Any = None) -> Any:
        response = await self.http.post(
            path, content=msgspec.json.encode(body), headers={"content-type": "application/json"}
        )
        response.raise_for_status()
        return msgspec.json.decode(response.content, type=kind) if kind else None

    async def _fetch(self, sha256: str, dest: Path) -> str:
        data = self._inline.get(sha256)
        if data is not None:  # it came with the lease: a few KiB, written right here
            dest.write_bytes(data)
            return hashlib.sha256(data).hexdigest()
        async with self.http.stream("GET", f"/blobs/{sha256}") as response:
            response.raise_for_status()
            # most blobs are small: over the kept-alive connection; a big one is asked for
            # again below (closing this response stops the coordinator reading it)
            if int(response.headers.get("content-length", 0)) < 16 << 20:
                digest = await self.cache.receive(response.aiter_bytes(), dest)
                log.info("fetched blob %s", sha256)
                return digest

        def download() -> str:
            # blocking, in a thread of its own: off the event loop, and straight off the socket
            # where that applies (a 1 GB input was CPU-bound in httpx), else the sync client
            from ._download import download_blob

            tls = tls_verify(self.config.server, self.config.ca_file)
            http = self.http
            digest = download_blob(http, tls, sha256, dest, self.cache.receive_sync)
            if digest is not None:
                return digest
            with (
                httpx.Client(
                    base_url=http.base_url, headers=http.headers, timeout=http.timeout, verify=tls
                ) as client,
                client.stream("GET", f"/blobs/{sha256}") as response,
            ):
                response.raise_for_status()
                return self.cache.receive_sync(response.iter_bytes(), dest)

        digest = await asyncio.to_thread(download)
        log.info("fetched blob %s", sha256)
        return digest

    async def _upload(self, files: dict[str, Path]) -> None:
        """Upload the files (by hash) that the coordinator does not have yet, riding out a
        coordinator restart rather than failing the task for want of a connection."""
        todo = {sha: path for sha, path in files.items() if sha not in self._stored}
        if todo:
            await _retrying(lambda: self._upload_once(todo))
            self._remember_stored(todo)

    def _remember_stored(self, hashes: Iterable[str]) -> None:
        if len(self._stored) > _STORED_MAX:
            self._stored.clear()
        self._stored.update(hashes)

    async def _upload_once(self, files: dict[str, Path]) -> None:
        reply = await self._post("/blobs/missing", MissingBlobs(list(files)), MissingBlobsReply)
        for sha in reply.missing:
            path = files[sha]

            async def chunks(p: Path = path) -> Any:
                with p.open("rb") as f:
                    while data := f.read(1024 * 1024):
                        yield data

            response = await self.http.put(f"/blobs/{sha}", content=chunks())
            response.raise_for_status()

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
                reply = await self._post("/workers", body, WorkerRegistered)
            except httpx.HTTPError as exc:
                log.warning("cannot register with %s: %s", self.config.server, exc)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.worker_id = reply.id
            self._stored.clear()  # perhaps another coordinator: confirm blobs afresh
            self.heartbeat_interval = reply.heartbeat_interval
            log.info("registered as %s (%s)", reply.id, self.config.name)
            await self._refresh_allowlist()
            return

    async def _refresh_allowlist(self) -> None:
        """Fetch the coordinator's allowlist (only needed when a list is enforced)."""
        if self.guard.allow.mode != "list":
            return
        try:
            response = await self.http.get("/allow")
            response.raise_for_status()
            entries = msgspec.json.decode(response.content, type=list[AllowEntry])
        except (httpx.HTTPError, msgspec.DecodeError) as exc:
            log.warning("cannot fetch the coordinator's allowlist: %s", exc)
            return
        self.guard.allow.remote = {e.sha256 for e in entries}

    async def run(self) -> None:
        """Work until asked to stop, then finish running tasks and leave."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.drain)
        await self.register()
        beats = asyncio.create_task(self._heartbeat_loop())
        reports = asyncio.create_task(self.outbox.loop(self._send, _BACKOFF))
        idle = asyncio.create_task(self._desktop_loop()) if self.desktop else None
        try:
            await self._lease_loop()
            while self.running:
                await self._slot_free.wait()
                self._slot_free.clear()
            await self.outbox.flush(self._send, _BACKOFF)
            if self._removals:
                await asyncio.wait(self._removals)
        finally:
            for loop_task in (beats, reports, idle):
                if loop_task is not None:
                    loop_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await loop_task
            if self.worker_id:
                with contextlib.suppress(httpx.HTTPError):
                    await self.http.post(f"/workers/{self.worker_id}/deregister")
            await self.http.aclose()
            await self.fnpool.aclose()
            self.guard.close()

    def drain(self) -> None:
        """Take no new tasks; finish the running ones, then exit."""
        log.info("draining: %d task(s) still running", len(self.running))
        self._stopping.set()
        self._slot_free.set()
        for task_id, run in self.running.items():
            if task_id not in self._executing:  # prefetched, not started: back to the queue
                run.released = True
        self._gate.fire()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _lease_loop(self) -> None:
        while not self._stopping.is_set():
            # a task takes as many slots as its `cpus` requirement asks for
            # (not while blocked on its children, client/_current.py: others may use them)
            used = sum(
                slots_needed(r.assignment.spec.requires)
                for task_id, r in self.running.items()
                if task_id not in self._blocked
            )
            ahead = 0 if self.desktop else prefetch_room(*self._prefetch_facts())
            free = self.config.slots + ahead - used
            if not worth_asking(free, ahead, len(self.running) - len(self._executing)):
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
                self._post(
                    f"/workers/{self.worker_id}/lease",
                    LeaseRequest(
                        max=free,
                        wait=self.config.lease_wait,
                        results=results,
                        prefetch=ahead,
                        prefetch_job=self._short_job if ahead else "",
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
            reply = _refusal(exc, results)
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
                await self._release(assignment)
                continue
            # into `running` before any other task can run: one finishing now must not see the
            # worker idle and clear the inline inputs this one came with
            run = self._accept(assignment)
            self._inline.update(assignment.inline)
            task = asyncio.create_task(self._run_task(run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(0)  # the new tasks reach their slot wait before slots are counted

    def _accept(self, a: Assignment) -> _Running:
        run = _Running(
            a, TaskProcess(), self.config.work_dir / "tasks" / f"{a.task_id}.{a.attempt}"
        )
        self.running[a.task_id] = run
        return run

    async def _heartbeat_loop(self) -> None:
        while True:
            body = Heartbeat(
                # a cancelled lease is not presented again: the coordinator answers stale
                # leases at once, so re-sending one would spin this loop until the task ends
                leases=[r.assignment.lease_id for r in self.running.values() if _presented(r)]
                + self.outbox.leases(),
                logs=self._log_chunks(),
                capabilities={
                    **dynamic_capabilities(self.config.work_dir),
                    **self._reported_caps(),
                },
                wait=self.heartbeat_interval,
                draining=self._stopping.is_set(),
                blocked=sorted(self._blocked),
                status=self.desktop.status if self.desktop else "online",
            )
            try:
                reply = await self._post(
                    f"/workers/{self.worker_id}/heartbeat", body, HeartbeatReply
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
            if set(reply.blocked) != self._blocked:
                self._blocked = set(reply.blocked)
                self._slot_free.set()  # the lease loop recounts free slots
                self._gate.fire()

    async def _desktop_loop(self) -> None:
        """Desktop mode: suspend, resume and give back tasks as the owner comes and goes."""
        assert self.desktop is not None

        def tasks() -> dict[str, TaskProcess]:
            return {t: r.process for t, r in self.running.items() if _presented(r)}

        await self.desktop.run(tasks, self._give_back, self._slot_free.set)

    async def _give_back(self, task_id: str) -> None:
        """Kill a task and stop presenting its lease; `_run_task` then hands it back."""
        run = self.running.get(task_id)
        if run is not None and _presented(run):
            run.released = True
            run.process.kill()
            self._gate.fire()

    async def _release(self, a: Assignment) -> None:
        """Tell the coordinator to requeue a task given back (its lease expires otherwise)."""
        try:
            await self._post(f"/tasks/{a.task_id}/release", TaskRelease(a.lease_id))
            log.info("gave task %s back to the queue", a.task_id)
        except httpx.HTTPError as exc:
            log.warning("cannot give task %s back (%s); its lease will expire", a.task_id, exc)

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

    def _cancel(self, lease_ids: list[str]) -> None:
        self.outbox.drop_stale(lease_ids)  # finished, not yet (or being) reported
        for run in list(self.running.values()):
            if run.assignment.lease_id in lease_ids:
                log.info("task %s cancelled by the coordinator", run.assignment.task_id)
                run.cancelled = True
                run.process.kill()
                self._gate.fire()

    def _log_chunks(self) -> list[LogChunk]:
        chunks = []
        for run in self.running.values():
            if not _presented(run):
                continue
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
            run = self.running.get(chunk.task_id)
            if run is not None and run.assignment.lease_id == chunk.lease_id:
                run.log_offsets[chunk.stream] = chunk.offset + len(chunk.data)

    # one task
    async def _run_task(self, run: _Running) -> None:
        a, name = run.assignment, run.dir.name
        started, result = None, None
        try:
            if await self._wait_for_slot(run):
                # a function task going to a pooled runner lives in its root (fnpool.py); the
                # seat is claimed only now that the task has a slot (it may have been prefetched)
                run.dir = self.fnpool.claim(a) / "tasks" / name
                started = time.monotonic()
                result = await self._execute(run, run.dir / "work")
                self._times.add(time.monotonic() - started)
                self._short_job = a.job_id  # the job whose run times the mean now reflects
        except httpx.TransportError as exc:
            # not the task's fault: stop presenting the lease so it expires and is requeued
            log.warning("abandoning task %s: coordinator unreachable: %s", a.task_id, exc)
        except Exception as exc:  # a worker bug must not take the worker down
            log.exception("task %s failed in the worker", a.task_id)
            result = TaskResult(a.lease_id, None, error=f"worker: {exc}")
        finally:
            self.running.pop(a.task_id, None)
            if not self.running:  # inline inputs staging did not use (cached already)
                self._inline.clear()
            self._executing.pop(a.task_id, None)
            self._gate.fire()
            if result is not None and _presented(run):  # its directory goes once it is answered
                self.outbox.put(a.task_id, result, run.dir)
            elif started is not None:
                self._remove(run.dir, now=run.released)
            self._slot_free.set()  # the lease loop takes the result with its next call
        if run.released:  # after the cleanup: the task may come back here with this attempt
            await self._release(a)

    def _remove(self, task_dir: Path, now: bool = False) -> None:
        """Delete a finished task's directory: in a thread, off the path of the next task
        (on a busy disk each rmdir can take a millisecond); at once when the same attempt may
        come back here (a task given back)."""
        if self.config.keep_task_dirs:
            return
        if now:
            shutil.rmtree(task_dir, ignore_errors=True)
            return
        removal = asyncio.ensure_future(asyncio.to_thread(shutil.rmtree, task_dir, True))
        self._removals.add(removal)
        removal.add_done_callback(self._removals.discard)

    async def _wait_for_slot(self, run: _Running) -> bool:
        """Wait until the task fits in the free slots (it may have been leased ahead of
        them); False when it was cancelled or given back meanwhile, or waited too long
        (then it is given back)."""
        need = slots_needed(run.assignment.spec.requires)
        deadline = time.monotonic() + GIVE_BACK
        while _presented(run) and not self._fits(need):
            left = deadline - time.monotonic()
            if left <= 0:
                log.info("task %s found no free slot: giving it back", run.assignment.task_id)
                run.released = True
                break
            await self._gate.wait(left)
        if not _presented(run):
            return False
        self._executing[run.assignment.task_id] = time.monotonic()
        return True

    def _prefetch_facts(self) -> tuple[int, float | None, float]:
        now = time.monotonic()
        oldest = max((now - t for t in self._executing.values()), default=0.0)
        return self.config.slots, self._times.mean, oldest

    def _fits(self, need: int) -> bool:
        busy = sum(
            slots_needed(self.running[t].assignment.spec.requires)
            for t in self._executing
            if t in self.running and t not in self._blocked
        )
        return busy == 0 or busy + need <= self.config.slots

    async def _execute(self, run: _Running, work: Path) -> TaskResult:
        a = run.assignment
        work.mkdir(parents=True, exist_ok=True)
        known = {}
        try:
            for name, ref in a.spec.inputs.items():
                rel = safe_relpath(name)
                await self.cache.stage(ref.sha256, ref.size, resolve_inside(work, rel), ref.mode)
                known[rel.as_posix()] = ref.sha256
        except (UnsafePath, OSError, CacheError) as exc:
            return TaskResult(a.lease_id, None, error=f"staging inputs: {exc}")
        # with no inputs the directory is empty: not worth a thread hop (likewise below)
        before = await maybe_thread(bool(known), snapshot, work, known)
        extra = {
            **self.config.expose_env,
            "CORRAL_JOB_ID": a.job_id,
            "CORRAL_TASK_ID": a.task_id,
            "CORRAL_ATTEMPT": str(a.attempt),
            **client_env(self.config, a),
        }
        argv = command_line(runner_argv(a.spec.argv), a.spec.shell, work)
        env = task_env(a.spec.env, work, extra)
        refused = await self._refuse(argv, work, env)
        if refused:
            log.warning("task %s refused: %s", a.task_id, refused)
            return TaskResult(a.lease_id, None, error=refused)
        exit_code, error = await self._run_guarded(run, work, argv, env)
        if not _presented(run):
            return TaskResult(a.lease_id, exit_code, error="killed")
        return await self._collect(run, work, before, exit_code, error)

    async def _refuse(self, argv: list[str], work: Path, env: dict[str, str]) -> str | None:
        # the coordinator's list is read afresh for each task, so a removal counts at once
        await self._refresh_allowlist()
        listed = self.guard.allow.mode != "all"
        return await maybe_thread(listed, self.guard.refuse, argv, work, env)

    async def _run_guarded(
        self, run: _Running, work: Path, argv: list[str], env: dict[str, str]
    ) -> tuple[int | None, str | None]:
        """Run the task in its sandbox under its limits; its exit code and error."""
        spec = run.assignment.spec
        wall = spec.limits.get("wall_time")
        launch: Launch = self.guard.launch(spec, argv, work, run.dir.name)
        try:
            # a function task claimed by a pooled runner makes its call there (fnpool.py)
            finished = await self.fnpool.call(run.assignment, run.process, env, run.dir, argv)
            if finished is None:
                finished = await run.process.run(
                    launch.argv,
                    work,
                    env,
                    run.dir / "stdout",
                    run.dir / "stderr",
                    wall if wall else None,
                    launch.preexec,
                )
            error = finished.error
            if error is None or error.startswith("killed by signal"):
                stderr = run.dir / "stderr"
                hit = self.guard.verdict(spec.limits, finished.exit_code, stderr, launch)
                error = hit or error
        finally:
            if launch.cgroup is not None:  # nothing to remove otherwise: no thread hop
                await asyncio.to_thread(launch.close)
        return finished.exit_code, error

    async def _collect(
        self, run: _Running, work: Path, before: Any, exit_code: int | None, error: str | None
    ) -> TaskResult:
        a = run.assignment
        paths = await maybe_thread(bool(before), changed_files, work, before, a.spec.outputs)
        out = _Outgoing()
        manifest: dict[str, OutputFile] = {}
        for rel in paths:
            path = work / rel
            st = path.stat()
            sha = await out.add(path, st.st_size)
            manifest[rel] = OutputFile(sha, st.st_size, st.st_mode & 0o777)
        cap = a.spec.limits.get("output_size")
        if cap and sum(f.size for f in manifest.values()) > cap:
            # refuse to return any of it rather than an arbitrary part
            out, manifest, error = _Outgoing(), {}, "limit_exceeded: output_size"
        streams = {}
        for stream in ("stdout", "stderr"):
            path = run.dir / stream
            streams[stream] = await out.add(path, path.stat().st_size)
        await self._upload(out.files)
        return TaskResult(
            a.lease_id,
            exit_code,
            streams["stdout"],
            streams["stderr"],
            manifest,
            error,
            {sha: data for sha, data in out.inline.items() if sha not in self._stored},
        )

    async def _send(self, results: dict[str, TaskResult]) -> ResultsReply | None:
        """One batch of results on its own; None when the coordinator could not be reached."""
        try:
            return await self._post(  # type: ignore[no-any-return]
                f"/workers/{self.worker_id}/results", WorkerResults(results), ResultsReply
            )
        except httpx.TransportError as exc:
            log.warning("coordinator unreachable, results will be sent again: %s", exc)
            return None
        except httpx.HTTPStatusError as exc:
            log.warning("results refused: %s", exc.response.text)
            return _refusal(exc, results)


@dataclass
class _Outgoing:
    """A finished task's files on their way out, by hash: small ones inside the result (up to
    INLINE_TOTAL in all), the others to upload."""

    files: dict[str, Path] = field(default_factory=dict)
    inline: dict[str, bytes] = field(default_factory=dict)
    inline_size: int = 0

    async def add(self, path: Path, size: int) -> str:
        """Take one file; its hash."""
        if size <= INLINE_MAX and self.inline_size + size <= INLINE_TOTAL:
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            if sha not in self.inline:
                self.inline[sha] = data
                self.inline_size += len(data)
            return sha
        sha = await maybe_thread(size > _INLINE_HASH, sha256_file, path)
        self.files[sha] = path
        return sha


def _refusal(exc: httpx.HTTPStatusError, results: dict[str, TaskResult]) -> ResultsReply | None:
    """What a request carrying results that failed with an HTTP error means for them: None
    after a 5xx (the coordinator failed: send them again), else none of them counts (an
    unknown worker)."""
    if exc.response.status_code >= 500:
        return None
    return ResultsReply(stale=list(results))


def _presented(run: _Running) -> bool:
    """Whether a task's lease is still ours to extend and report on."""
    return not (run.cancelled or run.released)


async def _retrying(call: Callable[[], Awaitable[Any]]) -> Any:
    """Retry a call on connection errors with backoff (about a minute in all)."""
    for delay in _BACKOFF:
        try:
            return await call()
        except httpx.TransportError as exc:
            log.warning("coordinator unreachable, retrying in %s s: %s", delay, exc)
            await asyncio.sleep(delay)
    return await call()


def run_worker(config: WorkerConfig) -> None:
    """Run a worker until SIGTERM or SIGINT has drained it."""
    asyncio.run(with_pidfd_watcher(Agent(config).run()))
