"""Function runners kept alive between tasks: one per slot, reused by tasks of one job.

A function task (`python3 -m corral.worker.pyrunner FN CALL RESULT`, see pyrunner.py) pays for
a fresh interpreter and the import of cloudpickle before it runs a line of the caller's code.
The pool keeps up to `slots` runners (`pyrunner --serve`), each started the way a task is
(through the Guard: the same sandbox and limits), and hands each a task's call instead:

    task leased ── claim ──> a seat (its runner serves one key) ── or None: a fresh process
                               │
    _run_guarded ── call ──> runner started if need be; the call; the seat is free again

A seat serves one key: the job, the task's declared env, its network requirement and its
limits. A runner is reused only for its own key; another key takes an idle seat, killing the
runner there. Tasks with limits a shared process cannot honour one task at a time (memory,
cpu_time, file_size, processes) take the fresh-process path, as does any other command.

Under bwrap the worker's work directory is hidden from a task, so each seat has a root
directory the runner's sandbox binds, and tasks going to that runner get their directory
inside it. A runner that dies or is killed in a call (kill, wall_time, give-back, a crash)
is not reused: the next task of the seat starts a fresh one.

`poolable`, `pool_key` and `choose_seat` are the decisions, pure; `FnPool` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol import Assignment, TaskSpec
from .executor import Finished, TaskProcess, kill_tree
from .guard import Guard
from .pyrunner import MODULE, READY, SERVE
from .sandbox import wants_network

__all__ = ["FnPool", "PoolKey", "SeatView", "choose_seat", "pool_key", "poolable"]

log = logging.getLogger("corral.worker")

# what a runner honours per call; the others are set on a process, for all its calls
POOLED_LIMITS = frozenset({"wall_time", "output_size"})
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 5.0

PoolKey = tuple[str, tuple[tuple[str, str], ...], bool, tuple[tuple[str, float], ...]]


def poolable(spec: TaskSpec) -> bool:
    """Whether a task may go to a pooled runner: a function call with only pooled limits."""
    argv = list(spec.argv)
    if spec.shell or len(argv) != 6 or argv[:3] != ["python3", "-m", MODULE]:
        return False
    return all(key in POOLED_LIMITS for key, value in spec.limits.items() if value)


def pool_key(job_id: str, spec: TaskSpec) -> PoolKey:
    """What a runner must share with a task to serve it: job, env, network and limits."""
    env = tuple(sorted(spec.env.items()))
    limits = tuple(sorted((k, float(v)) for k, v in spec.limits.items() if v))
    return (job_id, env, wants_network(spec.requires), limits)


@dataclass(frozen=True)
class SeatView:
    """What `choose_seat` needs to know about one seat."""

    key: PoolKey | None  # the key its runner serves; None when it never served one
    busy: bool  # claimed by a task
    alive: bool  # a runner is running there
    used: float = 0.0  # when it last served a call (monotonic), for least-recently-used


def choose_seat(seats: Sequence[SeatView], key: PoolKey) -> int | None:
    """The seat a task with `key` should use, or None (all busy: a fresh process).

    Its own key's idle runner first; then an idle seat with no runner; then the idle seat
    of another key used least recently (its runner is replaced)."""
    idle = [i for i, s in enumerate(seats) if not s.busy]
    for wanted in (
        [i for i in idle if seats[i].key == key and seats[i].alive],
        [i for i in idle if seats[i].key == key],
        [i for i in idle if not seats[i].alive],
    ):
        if wanted:
            return wanted[0]
    return min(idle, key=lambda i: seats[i].used) if idle else None


class Runner:
    """One `pyrunner --serve` process: requests on its stdin, exit codes on its stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.exited: asyncio.Future[int] = asyncio.ensure_future(proc.wait())

    @property
    def alive(self) -> bool:
        """Whether it still runs."""
        return not self.exited.done()

    async def ready(self) -> bool:
        """Wait for its first line: `ready` once it has started, nothing if it died."""
        return await self._line() == READY

    async def answer(self) -> int | None:
        """The exit code the call in progress would have had; None when it died in the call."""
        line = await self._line()
        try:
            return int(line)
        except ValueError:
            return None

    async def _line(self) -> bytes:
        assert self.proc.stdout is not None
        reading = asyncio.ensure_future(self.proc.stdout.readline())
        either: set[asyncio.Future[Any]] = {reading, self.exited}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not reading.done():
            reading.cancel()
            return b""
        return reading.result()

    async def send(self, request: Mapping[str, object]) -> bool:
        """Send one request; False when it can no longer take one."""
        assert self.proc.stdin is not None
        if not self.alive:
            return False
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            await self.proc.stdin.drain()
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def stop(self) -> None:
        """Kill its process tree and reap it."""
        kill_tree(self.proc.pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), _STOP_TIMEOUT)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.log_path.unlink(missing_ok=True)


@dataclass
class _Seat:
    root: Path
    key: PoolKey | None = None
    runner: Runner | None = None
    task: str | None = None  # the task that claimed it
    used: float = 0.0


@dataclass
class FnPool:
    """Up to `slots` function runners of this worker, and which task uses which."""

    guard: Guard
    work_dir: Path
    slots: int
    running: Callable[[str], bool]  # whether a task is still on this worker
    seats: list[_Seat] = field(default_factory=list)
    _claims: dict[str, _Seat] = field(default_factory=dict)
    _roots: itertools.count[int] = field(default_factory=itertools.count)
    _stopping: set[asyncio.Future[None]] = field(default_factory=set)
    _old_roots: list[Path] = field(default_factory=list)  # removed once their tasks are

    def claim(self, a: Assignment) -> Path:
        """Where the task's directory goes: its runner's root, or the work dir (no runner)."""
        if not poolable(a.spec):
            return self.work_dir
        self._forget_gone()
        while len(self.seats) < self.slots:
            self.seats.append(_Seat(self._new_root()))
        key = pool_key(a.job_id, a.spec)
        views = [SeatView(s.key, s.task is not None, _alive(s), s.used) for s in self.seats]
        index = choose_seat(views, key)
        if index is None:
            return self.work_dir
        seat = self.seats[index]
        if seat.key != key:
            self._retire(seat)
            self._old_roots.append(seat.root)
            self._sweep()
            seat.root, seat.key = self._new_root(), key
        seat.task = a.task_id
        self._claims[a.task_id] = seat
        return seat.root

    async def call(
        self, a: Assignment, process: TaskProcess, env: dict[str, str], task_dir: Path
    ) -> Finished | None:
        """Run a claimed task's call on its seat's runner; None: run it as a fresh process."""
        seat = self._claims.pop(a.task_id, None)
        if seat is None:
            return None
        try:
            if process.killed:
                return Finished(None, "killed")
            runner = await self._runner(seat, a.spec, env)
            request = {
                "argv": list(a.spec.argv[3:]),
                "cwd": str(task_dir / "work"),
                "env": env,
                "stdout": str(task_dir / "stdout"),
                "stderr": str(task_dir / "stderr"),
            }
            for stream in ("stdout", "stderr"):
                (task_dir / stream).write_bytes(b"")
            if runner is None or not await runner.send(request):
                return None
            wall = a.spec.limits.get("wall_time")
            finished = await process.call(runner.proc, runner.answer(), wall or None)
            if not runner.alive or finished.error is not None:
                self._retire(seat)
            return finished
        finally:
            seat.task, seat.used = None, time.monotonic()

    async def _runner(self, seat: _Seat, spec: TaskSpec, env: dict[str, str]) -> Runner | None:
        """The seat's runner, started if it has none; None when one cannot start."""
        if seat.runner is not None and seat.runner.alive:
            return seat.runner
        self._retire(seat)
        seat.root.mkdir(parents=True, exist_ok=True)
        log_path = seat.root.with_suffix(".log")
        argv = [sys.executable, "-m", MODULE, SERVE]
        launch = self.guard.launch(spec, argv, seat.root, seat.root.name)
        # HOME and TMPDIR are the task's in each call; the process itself gets the root
        start_env = {**env, "HOME": str(seat.root), "TMPDIR": str(seat.root)}
        with log_path.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                cwd=seat.root,
                env=start_env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                preexec_fn=launch.preexec,
            )
        runner = Runner(proc, log_path)
        try:
            ok = await asyncio.wait_for(runner.ready(), _START_TIMEOUT)
        except TimeoutError:
            ok = False
        if not ok:
            tail = log_path.read_bytes()[-2000:].decode(errors="replace")
            log.warning("a function runner did not start (a fresh process instead): %s", tail)
            await runner.stop()
            return None
        seat.runner = runner
        return runner

    def _retire(self, seat: _Seat) -> None:
        """Stop the seat's runner (in the background) and forget it."""
        if seat.runner is not None:
            stopping = asyncio.ensure_future(seat.runner.stop())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
            seat.runner = None

    def _new_root(self) -> Path:
        return self.work_dir / "fn" / f"r{next(self._roots)}"

    def _sweep(self) -> None:
        """Remove the roots of replaced runners once their tasks' directories are gone."""
        for root in self._old_roots:
            for path in (root / "tasks", root):
                with contextlib.suppress(OSError):
                    path.rmdir()
        self._old_roots = [root for root in self._old_roots if root.exists()]

    def _forget_gone(self) -> None:
        """Claims of tasks that ended before their call (refused, staging failed) lapse."""
        for task_id in [t for t in self._claims if not self.running(t)]:
            self._claims.pop(task_id).task = None

    async def aclose(self) -> None:
        """Stop every runner (the worker is leaving)."""
        for seat in self.seats:
            self._retire(seat)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        self._old_roots += [seat.root for seat in self.seats]
        self._sweep()


def _alive(seat: _Seat) -> bool:
    return seat.runner is not None and seat.runner.alive
