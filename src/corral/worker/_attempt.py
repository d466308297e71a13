"""One attempt of a task on this worker, once it has its slots: stage its inputs, run it in
its sandbox under its limits, collect its outputs into a result; or, when it is evicted
(eviction.py), save its checkpoint and give it back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol import (
    CHECKPOINT_ENV,
    INLINE_MAX,
    INLINE_TOTAL,
    STATE_DIR,
    Assignment,
    OutputFile,
    TaskResult,
)
from ._aio import maybe_thread
from ._inside import Found, prepare
from ._link import Link
from .cache import CacheError, FileCache
from .checkpoints import Checkpoints, SaveFailed, checkpoint_dir
from .config import WorkerConfig, client_env
from .executor import TaskProcess, command_line, task_env
from .fnpool import FnPool, hostable, poolable
from .guard import Guard, Launch
from .limits import Usage, output_size_error
from .outputs import (
    Entry,
    Snapshot,
    UnsafePath,
    changed_entries,
    make_dir,
    place_inside,
    safe_name,
    sha256_file,
    snapshot,
)
from .pyrunner import runner_argv
from .relay import needs_relay, relay_channel
from .state import Held, WorkerState

__all__ = ["Attempts", "Outgoing", "TaskRun"]

log = logging.getLogger("corral.worker")
_INLINE_HASH = 256 * 1024  # files up to this size are hashed without a thread hop
_STATE_PREFIX = f"{STATE_DIR}/"
_INSIDE_MAX = 256 * 1024  # inputs a pooled runner is sent to write itself, in all
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass
class TaskRun:
    """The I/O side of one held task: its process, directory and output sent so far (what
    became of it is the worker state's, state.py)."""

    held: Held
    process: TaskProcess
    dir: Path
    log_offsets: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    # its inputs, for a pooled runner that makes its directory itself (fnpool.call), and
    # what the runner found made or changed there once it ran (None: the worker walks it)
    inside: dict[str, Any] | None = None
    found: Found | None = None
    before: Snapshot = field(default_factory=dict)  # the directory before it ran

    @property
    def assignment(self) -> Assignment:
        """The lease it runs under."""
        return self.held.assignment


class Attempts:
    """Runs tasks that have their slots."""

    def __init__(
        self,
        config: WorkerConfig,
        state: WorkerState,
        link: Link,
        cache: FileCache,
        guard: Guard,
        fnpool: FnPool,
    ) -> None:
        self.config = config
        self.state = state
        self.link = link
        self.cache = cache
        self.guard = guard
        self.fnpool = fnpool
        self.checkpoints = Checkpoints(link, cache, config.work_dir / "checkpoints")

    async def execute(self, run: TaskRun, work: Path) -> TaskResult:
        """Stage, run and collect one task; its result."""
        a = run.assignment
        if not needs_relay(self.guard.sandbox, a.spec.requires):
            return await self._execute(run, work, None)
        # a task on a pooled runner's seat uses the seat's relay, others one of their own
        async with self.fnpool.seat_relay(a, self.link.http) as relay_url:
            if relay_url is not None:
                return await self._execute(run, work, relay_url)
        async with relay_channel(self.link.http, a.token, work, True) as relay_url:
            return await self._execute(run, work, relay_url)

    async def _execute(self, run: TaskRun, work: Path, relay_url: str | None) -> TaskResult:
        a = run.assignment
        if run.inside is None:
            try:
                await self._make(a, work)
                run.before = await self._stage(a, work)
                await self.checkpoints.restore(a, work)
            except (UnsafePath, OSError, CacheError) as exc:
                return TaskResult(a.lease_id, None, error=f"staging inputs: {exc}")
        extra = {
            **self.config.expose_env,
            "CORRAL_JOB_ID": a.job_id,
            "CORRAL_TASK_ID": a.task_id,
            "CORRAL_ATTEMPT": str(a.attempt),
            CHECKPOINT_ENV: str(checkpoint_dir(work)),
            **client_env(self.config, a, relay_url),
        }
        shipped = None if run.inside is None else {k: v[0] for k, v in run.inside.items()}
        argv = command_line(runner_argv(a.spec.argv), a.spec.shell, work, shipped)
        env = task_env(a.spec.env, work, extra)
        refused = await self._refuse(argv, work, env)
        if refused:
            log.warning("task %s refused: %s", a.task_id, refused)
            return TaskResult(a.lease_id, None, error=refused)
        exit_code, error, usage = None, None, None
        if not run.process.terminating:  # evicted while its inputs were staged: not run
            exit_code, error, usage = await self._run_cycle(run, work, argv, env)
        if run.process.terminating and (run.process.evicted or exit_code is None):
            return await self._give_back(run, work)
        if not run.held.presented:
            return TaskResult(a.lease_id, exit_code, error="killed")
        result = await self._collect(run, work, exit_code, error)
        result.restored = a.checkpoint.n if a.checkpoint else None
        if usage is not None:
            result.peak_memory = usage.peak_memory
            result.cpu_seconds = None if usage.cpu_seconds is None else round(usage.cpu_seconds, 3)
        return result

    def inside(self, a: Assignment) -> dict[str, Any] | None:
        """The inputs of a task whose runner may make its directory itself (_inside.py), if
        it gets one (fnpool.claim), `{rel: (mode, sha256, bytes)}`: all came with the lease,
        there is no checkpoint to restore, and the allowlist has nothing to read there
        first. None: the worker makes it."""
        if a.checkpoint is not None or not (poolable(a.spec) or hostable(a.spec)):
            return None
        if a.spec.inputs and self.guard.allow.mode != "all" and not poolable(a.spec):
            return None
        inside: dict[str, Any] = {}
        total = 0
        for name, ref in a.spec.inputs.items():
            data = self.state.inline(ref.sha256)
            try:
                rel = safe_name(name)
            except UnsafePath:
                return None  # refused in `_stage`, with its reason
            if data is None or rel in inside or len(data) != ref.size:
                return None
            if hashlib.sha256(data).hexdigest() != ref.sha256:
                return None
            total += ref.size
            inside[rel] = (ref.mode & 0o777, ref.sha256, data)
        return inside if total <= _INSIDE_MAX else None

    async def _make(self, a: Assignment, work: Path) -> None:
        """Make the task's directory, where the worker stages its inputs."""
        if self.fnpool.claimed(a):
            await self.fnpool.hold(a)  # its runner stopped first
        if not os.path.isdir(work):
            make_dir(work)

    async def _stage(self, a: Assignment, work: Path) -> Snapshot:
        """Put the task's inputs in its directory; the snapshot of it to compare with once
        the task has run. Inputs that came with the lease are written straight there, and
        when all did, their stats are the snapshot (the directory was empty: no walk)."""
        known, placed = {}, {}
        root = os.fspath(work)
        for name, ref in a.spec.inputs.items():
            rel, dest = place_inside(root, name)
            data = self.state.inline(ref.sha256)
            st = (
                None
                if data is None
                else self.cache.place(ref.sha256, ref.size, dest, ref.mode, data)
            )
            if st is None:
                await self.cache.stage(ref.sha256, ref.size, dest, ref.mode)
            else:
                placed[rel] = Entry(st.st_size, st.st_mtime_ns, st.st_mode & 0o777, ref.sha256)
            known[rel] = ref.sha256
        if len(placed) == len(known):
            return placed
        # with few inputs the walk is not worth a thread hop (likewise in `_collect`)
        return await maybe_thread(len(known) > 16, snapshot, work, known)

    async def _give_back(self, run: TaskRun, work: Path) -> TaskResult:
        """An evicted task's process has ended: save what its checkpoint directory holds
        (unless unchanged since it was restored or last saved), then let it go back to the
        queue. A save that fails leaves its last saved checkpoint the one it resumes from."""
        a = run.assignment
        # a runner that was to make its directory never did: what is there is not this task's
        made = run.inside is None or self.fnpool.made(a)
        if run.held.presented and made:  # not cancelled meanwhile (then its lease is stale)
            try:
                n = await self.checkpoints.save(a, work, unless_unchanged=True)
                log.info("task %s evicted; checkpoint %s", a.task_id, n or "unchanged or empty")
            except SaveFailed as exc:
                log.warning("task %s evicted; checkpoint not saved: %s", a.task_id, exc)
        if run.held.presented:
            self.state.evicted(a.task_id)
        return TaskResult(a.lease_id, None, error="evicted")

    async def _refuse(self, argv: list[str], work: Path, env: dict[str, str]) -> str | None:
        # the coordinator's list is read afresh for each task, so a removal counts at once
        await self.link.refresh_allowlist(self.guard)
        listed = self.guard.allow.mode != "all"
        return await maybe_thread(listed, self.guard.refuse, argv, work, env)

    async def _run_cycle(
        self, run: TaskRun, work: Path, argv: list[str], env: dict[str, str]
    ) -> tuple[int | None, str | None, Usage | None]:
        """Run the task, answering its save requests meanwhile; when it exits with the
        checkpoint code, save its checkpoint and run it again at once, in the same attempt
        and directory (HTCondor's checkpoint_exit_code)."""
        a, first = run.assignment, True
        while True:
            server = asyncio.create_task(self.checkpoints.serve(a, work))
            try:
                done = await self._run_guarded(run, work, argv, env, append=not first)
            finally:
                server.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await server
            exit_code, error, _ = done
            if exit_code != self.config.checkpoint_exit_code or error or not run.held.presented:
                return done
            if run.process.terminating:  # evicted: the eviction saves it, once
                return done
            try:
                n = await self.checkpoints.save(a, work)
            except SaveFailed as exc:
                return exit_code, f"checkpoint not saved: {exc}", done[2]
            log.info("task %s exited %d: checkpoint %s saved, run again", a.task_id, exit_code, n)
            first = False

    async def _run_guarded(
        self,
        run: TaskRun,
        work: Path,
        argv: list[str],
        env: dict[str, str],
        append: bool = False,
    ) -> tuple[int | None, str | None, Usage | None]:
        """Run the task in its sandbox under its limits; its exit code, error and what its
        cgroup counted (None without one)."""
        spec = run.assignment.spec
        wall = spec.limits.get("wall_time")
        launch: Launch | None = None
        usage = None
        try:
            # a function task claimed by a pooled runner makes its call there (fnpool.py)
            finished = await self.fnpool.call(
                run.assignment, run.process, env, run.dir, argv, append, run.inside
            )
            if finished is None and run.inside is not None:
                await self._prepare_here(run, work)
            if finished is None:
                launch = self.guard.launch(spec, argv, work, run.dir.name)
                async with launch.watching(spec.limits.get("cpu_time")):
                    finished = await run.process.run(
                        launch.argv,
                        work,
                        env,
                        run.dir / "stdout",
                        run.dir / "stderr",
                        wall if wall else None,
                        launch.preexec,
                        launch.pass_fds,
                        launch.started,
                        append,
                        launch.sandboxed,
                    )
                usage = launch.usage()
            else:
                run.found = finished.found
                if finished.cpu_seconds is not None:  # a pooled runner measured its call
                    usage = Usage(finished.peak_memory, finished.cpu_seconds)
            error = finished.error
            if error is None or error.startswith("killed by signal"):
                stderr = run.dir / "stderr"
                hit = self.guard.verdict(spec.limits, finished.exit_code, stderr, usage)
                error = hit or error
        finally:
            if launch is not None:
                if launch.cgroup is not None:  # nothing to remove otherwise: no thread hop
                    await asyncio.to_thread(launch.close)
                launch.release()  # its uid and descriptors (the process tree is gone)
        return finished.exit_code, error, usage

    async def _found(self, run: TaskRun, work: Path) -> Found:
        """What the task made or changed: as its runner found it, or found here by a walk."""
        if run.found is not None:
            return run.found
        slow = len(run.before) > 16
        found = await maybe_thread(
            slow, changed_entries, work, run.before, run.assignment.spec.outputs
        )
        # the checkpoint and save requests are never outputs
        return [
            (rel, st.st_mode & 0o777, st.st_size, None)
            for rel, st in found
            if not rel.startswith(_STATE_PREFIX)
        ]

    async def _prepare_here(self, run: TaskRun, work: Path) -> None:
        """What a runner would have done before the call, for a task that runs in a fresh
        process after all (no runner could start): its directory and inputs."""
        inputs, run.inside = run.inside or {}, None
        run.before = prepare(os.fspath(work.resolve()), inputs)  # no runner there to stop

    async def _collect(
        self, run: TaskRun, work: Path, exit_code: int | None, error: str | None
    ) -> TaskResult:
        a = run.assignment
        out = Outgoing()
        manifest: dict[str, OutputFile] = {}
        for rel, mode, size, data in await self._found(run, work):
            if data is not None:  # read by the runner (_inside.py)
                sha = out.add_bytes(data)
            else:
                sha = await out.add(work / rel, size)
            manifest[rel] = OutputFile(sha, size, mode)
        cap = a.spec.limits.get("output_size")
        over = output_size_error({p: f.size for p, f in manifest.items()}, cap) if cap else None
        if over:
            # refuse to return any of it rather than an arbitrary part
            out, manifest, error = Outgoing(), {}, over
        streams = {}
        for stream in ("stdout", "stderr"):
            path = run.dir / stream
            streams[stream] = await out.add(path, os.stat(path).st_size)
        await self.link.upload(out.files)
        return TaskResult(
            a.lease_id,
            exit_code,
            streams["stdout"],
            streams["stderr"],
            manifest,
            error,
            {sha: data for sha, data in out.inline.items() if sha not in self.state.stored},
        )


@dataclass
class Outgoing:
    """A finished task's files on their way out, by hash: small ones inside the result (up to
    INLINE_TOTAL in all), the others to upload."""

    files: dict[str, Path] = field(default_factory=dict)
    inline: dict[str, bytes] = field(default_factory=dict)
    inline_size: int = 0

    def add_bytes(self, data: bytes) -> str:
        """Take a file's bytes, read already (within the inline budget); its hash."""
        sha = hashlib.sha256(data).hexdigest()
        if sha not in self.inline:
            self.inline[sha] = data
            self.inline_size += len(data)
        return sha

    async def add(self, path: Path, size: int) -> str:
        """Take one file; its hash."""
        if not size:  # most tasks' stdout and stderr: nothing to read
            self.inline[EMPTY_SHA256] = b""
            return EMPTY_SHA256
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
