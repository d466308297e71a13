"""Function runners kept alive between tasks: one per slot, reused by tasks of one job.

A function task (`python3 -m corral.worker.pyrunner FN CALL RESULT`, see pyrunner.py) pays for
a fresh interpreter and the import of cloudpickle before it runs a line of the caller's code.
The pool keeps up to `slots` runners (`pyrunner --serve`), each started the way a task is
(through the Guard: the same sandbox and limits), and hands each a task's call instead:

    _run_task ── claim ──> a seat, held until the task ends; or none: a fresh process
    _execute ── hold ──> (only where the worker stages the inputs itself) the runner
                          stopped, then the task's directory made in the runner's root
    _run_guarded ── call ──> start the seat's runner if need be (or let a stopped one run
                              again), the call; the runner made the directory itself when
                              the inputs came with it (`inside`, _inside.py)

A seat serves one key: the submitter (all of one owner's jobs: module state carries over
between their calls, as in a Dask worker; never between owners), the task's declared env,
its network requirement and its limits. A runner is reused only for its own key; another
key takes an idle seat, killing the runner there. Tasks with limits a shared process cannot
honour one task at a time (memory, cpu_time, file_size, processes) take the fresh-process
path, as does any other command.

What keeps a long-lived runner as contained as a fresh process:
- it runs as a task does: on a root worker as a slot uid of its own (taskuser.py), held while
  it lives, and each task's directory in its root is handed to that uid for the call;
- its sandbox binds a root of its own (the worker's work directory is hidden); a task's `work`
  directory is created in it, and `<task dir>/work` is a symlink to it, so the worker stages
  inputs and collects outputs there as usual. The task dir, with stdout and stderr, stays out
  of the sandbox's reach: the runner gets those two files as descriptors with each request.
- the worker touches files in a runner's root only while the runner is stopped (SIGSTOP,
  until every thread is) or gone: a thread or a signal handler a call left behind could
  otherwise swap a name there for a symlink between the worker's check and its use, and the
  worker may be root. Where the inputs came with the lease, the runner makes the directory,
  writes them and reports what the call made or changed (small files' bytes with it), as
  its own user in its sandbox (_inside.py): the worker touches nothing there, and a runner
  left with one thread is not stopped at all. Unless task directories are kept, such tasks
  use the seat's own task directory (`_Seat.io`: stdout, stderr, `work`) and directory in
  its root (`SHARED`, emptied by the runner for the next one), so no directory is made or
  removed a task. A runner left with more threads is stopped after the call (so they use
  no CPU between calls), as is one whose larger outputs the worker reads itself;
- a call that leaves a process behind, dies, is killed or runs out of time retires the runner
  (its whole process tree is killed): the seat's next task starts a fresh one.

`poolable`, `pool_key` and `choose_seat` are the decisions, pure; `FnPool` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from ..protocol import INLINE_MAX, INLINE_TOTAL, RELAY_SOCKET, STATE_DIR, Assignment, TaskSpec
from ._aio import Sweeper, maybe_thread
from ._runner import Runner
from .executor import Finished, TaskProcess
from .guard import Guard
from .outputs import make_dir
from .pyrunner import MODULE, PIDNS, SERVE
from .relay import Relay
from .sandbox import wants_network
from .taskuser import hand_over

__all__ = [
    "FnPool",
    "PoolKey",
    "SeatView",
    "choose_seat",
    "hostable",
    "pool_key",
    "poolable",
    "scope_of",
]

log = logging.getLogger("corral.worker")

# what a runner honours per call; the others are set on a process, for all its calls
POOLED_LIMITS = frozenset({"wall_time", "output_size"})
_START_TIMEOUT = 60.0
_KEPT = 1000
SHARED = "task"  # in a seat's root: the directory its runner makes for shared claims

PoolKey = tuple[str, tuple[tuple[str, str], ...], bool, tuple[tuple[str, float], ...]]


def hostable(spec: TaskSpec) -> bool:
    """Whether a command task may run as a runner's child, in the runner's sandbox: any
    command whose only limits are those a runner honours per call."""
    return bool(spec.argv) and all(k in POOLED_LIMITS for k, v in spec.limits.items() if v)


def poolable(spec: TaskSpec) -> bool:
    """Whether a task may go to a pooled runner: a function call with only pooled limits."""
    argv = list(spec.argv)
    if spec.shell or len(argv) != 6 or argv[:3] != ["python3", "-m", MODULE]:
        return False
    return all(key in POOLED_LIMITS for key, value in spec.limits.items() if value)


def pool_key(scope: str, spec: TaskSpec) -> PoolKey:
    """What a runner must share with a task to serve it: scope (its owner, see `scope_of`),
    env, network and limits."""
    env = tuple(sorted(spec.env.items()))
    limits = tuple(sorted((k, float(v)) for k, v in spec.limits.items() if v))
    return (scope, env, wants_network(spec.requires), limits)


def scope_of(a: Assignment) -> str:
    """Whose tasks may share a runner: one submitter's (all their jobs, as a Dask client's
    tasks share its workers' processes), else, from a coordinator that does not say, one
    job's."""
    return f"owner:{a.owner}" if a.owner else f"job:{a.job_id}"


@dataclass(frozen=True)
class SeatView:
    """What `choose_seat` needs to know about one seat."""

    key: PoolKey | None  # the key its runner serves; None when it never served one
    busy: bool  # claimed by a task
    alive: bool  # a runner is running there
    used: float = 0.0  # when it was last claimed (monotonic), for least-recently-used


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


@dataclass
class _Seat:
    root: Path
    key: PoolKey | None = None
    runner: Runner | None = None
    task: str | None = None  # the task that claimed it
    used: float = 0.0
    relay: Relay | None = None  # its tasks' channel to the coordinator, in its root (relay.py)
    maker: Runner | None = None  # the runner that made `SHARED` in its root

    @property
    def io(self) -> Path:
        """The task directory of its shared claims (stdout, stderr, `work` linking to
        `SHARED` in its root), out of the runner's reach."""
        return self.root.with_suffix(".io")


@dataclass(eq=False)
class _Claim:
    seat: _Seat
    task_dir: Path  # where the agent keeps the task (stdout, stderr, `work` linking here)
    inner: Path  # the task's directory in the runner's root; `work` is in it
    task_id: str = ""
    shared: bool = False  # task_dir and inner are the seat's (`claim`)
    made: bool = False  # its runner was asked to make `inner` (`call` with `inside`)
    link: str = ""  # `work` in task_dir, as a string (looked for often: `_forget_gone`)

    def __post_init__(self) -> None:
        self.link = f"{self.task_dir}/work"


@dataclass
class FnPool:
    """Up to `slots` function runners of this worker, and which task uses which."""

    guard: Guard
    work_dir: Path
    slots: int
    running: Callable[[str], bool]  # whether a task is still on this worker
    keep_task_dirs: bool = False  # only read when the worker leaves
    sweeper: Sweeper = field(default_factory=Sweeper)  # removes task dirs in a thread
    seats: list[_Seat] = field(default_factory=list)
    _claims: dict[str, _Claim] = field(default_factory=dict)
    _roots: itertools.count[int] = field(default_factory=itertools.count)
    _stopping: set[asyncio.Future[None]] = field(default_factory=set)  # runners
    _old_roots: list[Path] = field(default_factory=list)  # removed once their tasks are
    _ended: list[_Claim] = field(default_factory=list)  # tasks gone, their dirs perhaps not
    _links: set[str] = field(default_factory=set)  # task dirs that link to a seat's (`owns`)

    def claim(self, a: Assignment, shared: bool = False) -> Path:
        """Give a task about to run a seat if it may have one; its task directory. That is
        `tasks/<task id>.<attempt>` as always, its `work` a link to a directory in the seat's
        root when it has a seat; or, `shared` (its runner makes its directory: `call` with
        `inside`) and task directories not kept, a link to the seat's own, the same for each
        such task (`_Seat.io`: no directory made or removed a task, one link)."""
        stale = self._claims.pop(a.task_id, None)
        if stale is not None:
            # an earlier run of this task ended here (another attempt, or this one given
            # back): its claim is over, or the task would run in its directory, on its files
            stale.seat.task = None
            if not stale.shared:
                self._ended.append(stale)
        self._forget_gone()
        task_dir = self.work_dir / "tasks" / f"{a.task_id}.{a.attempt}"
        # a command hosted by a runner skips a sandbox of its own, and its fork leaves the
        # worker's event loop (with no sandbox too: the runner forks it, not the worker)
        if poolable(a.spec) or hostable(a.spec):
            return self._seat(a, task_dir, shared and not self.keep_task_dirs)
        return task_dir

    def _seat(self, a: Assignment, task_dir: Path, shared: bool) -> Path:
        while len(self.seats) < self.slots:
            self.seats.append(_Seat(self._new_root()))
        key = pool_key(scope_of(a), a.spec)
        views = [SeatView(s.key, s.task is not None, _alive(s), s.used) for s in self.seats]
        index = choose_seat(views, key)
        if index is None:
            return task_dir
        seat = self.seats[index]
        if seat.key != key:
            self._retire(seat, remove=True)
            self._close_relay(seat)  # another owner's tasks: never their relay
            self._old_roots.append(seat.root)
            self._sweep()
            seat.root, seat.key = self._new_root(), key
        try:
            if shared:  # made by its runner, in the seat's root, the same for each such task
                inner = seat.root / SHARED
                if not os.path.lexists(seat.io / "work"):
                    make_dir(seat.io)
                    os.symlink(inner / "work", seat.io / "work")
                _link(seat.io, task_dir)  # where a task's directory is, as always
                self._links.add(str(task_dir))
            else:  # made later, by its runner (`call` with `inside`), or by `hold`
                inner = seat.root / f"{task_dir.name}-{next(self._roots)}"  # never seen before
                make_dir(task_dir)
                os.symlink(inner / "work", task_dir / "work")
        except OSError as exc:
            log.warning("task %s runs in a fresh process: %s", a.task_id, exc)
            return task_dir
        seat.task, seat.used = a.task_id, time.monotonic()
        self._claims[a.task_id] = _Claim(seat, task_dir, inner, a.task_id, shared)
        return task_dir

    def owns(self, task_dir: Path) -> bool:
        """Whether a task directory is a link to a seat's own (`claim` with `shared`), which
        goes with its seat: `unlink` it, never remove what it links to."""
        return str(task_dir) in self._links

    def unlink(self, task_dir: Path) -> None:
        """Remove a shared claim's task directory, the link (its task has ended)."""
        self._links.discard(str(task_dir))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(task_dir)

    def made(self, a: Assignment) -> bool:
        """Whether a claimed task's runner was asked to make its directory (so what is there
        is the task's own, not an earlier task's of the seat)."""
        claim = self._claims.get(a.task_id)
        return claim is not None and claim.made

    def claimed(self, a: Assignment) -> bool:
        """Whether the task has a seat (its call goes to the seat's runner)."""
        return a.task_id in self._claims

    async def hold(self, a: Assignment) -> None:
        """Before the worker itself puts files in a claimed task's directory: stop the
        seat's runner (a thread or a handler a call left there could otherwise swap a name
        in its root for a symlink meanwhile), then make the directory. Where that fails the
        claim ends, and the task runs in a fresh process in a directory of its own."""
        claim = self._claims[a.task_id]
        await self._stop_runner(claim.seat)
        try:
            make_dir(claim.seat.root)
            os.mkdir(claim.inner)
            os.mkdir(claim.inner / "work")
        except OSError as exc:  # the runner may have left anything in its root
            log.warning("function runner root %s: %s; replacing the runner", claim.seat.root, exc)
            await self._retire_now(claim.seat)
            del self._claims[a.task_id]
            claim.seat.task = None
            os.unlink(claim.task_dir / "work")
            os.mkdir(claim.task_dir / "work")

    async def _stop_runner(self, seat: _Seat) -> None:
        """Have the seat's runner stopped (or gone) before the worker touches its root."""
        runner = seat.runner
        if runner is not None and runner.alive and not runner.frozen and not await runner.freeze():
            await self._retire_now(seat)  # some thread of it would not stop

    async def call(
        self,
        a: Assignment,
        process: TaskProcess,
        env: dict[str, str],
        task_dir: Path,
        argv: list[str] | None = None,
        append: bool = False,
        inside: dict[str, Any] | None = None,
    ) -> Finished | None:
        """Run a claimed task's call on its seat's runner; None: run it as a fresh process.
        `append` keeps what its stdout and stderr hold (run again after a checkpoint);
        `inside` (its inputs, `{rel: [mode, sha256, bytes]}`): the runner makes the task's
        directory and puts them there, and reports what the call made or changed in it
        (`Finished.found`); without it the worker did (`hold`) and does."""
        claim = self._claims.get(a.task_id)
        if claim is None:
            return None
        if process.killed:
            return Finished(None, "killed")
        seat, work = claim.seat, str(claim.inner / "work")
        # HOME and TMPDIR name the task's directory: as the runner sees it
        outer = str(task_dir / "work")
        env = {k: work + v[len(outer) :] if _under(v, outer) else v for k, v in env.items()}
        runner = await self._runner(seat, a.spec, env)
        if runner is None:
            return None
        request = self._request(a, work, env, argv, append, inside)
        if claim.shared and "make" in request:
            if seat.maker is runner:  # made by it for the last task: emptied, used again
                request["reuse"] = work
            seat.maker = runner
        # a root worker's runner runs as a slot uid: the task's directory becomes its own
        if runner.launch.identity is not None:
            if inside is None:  # a few files: not worth a thread hop
                many = len(a.spec.inputs) > 16 or a.checkpoint is not None
                await maybe_thread(many, hand_over, claim.inner, runner.launch.identity)
            if seat.relay is not None:
                seat.relay.hand_to(runner.launch.identity.uid, runner.launch.identity.gid)
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
        fds = [os.open(f"{task_dir}/{name}", flags, 0o644) for name in ("stdout", "stderr")]
        try:
            runner.thaw()
            sent = runner.send(request, fds)
            claim.made = claim.made or (sent and "make" in request)
        finally:
            for fd in fds:
                os.close(fd)
        if not sent:
            await self._retire_now(seat)
            return None
        wall = a.spec.limits.get("wall_time")
        runner.used = (None, None)  # a call cut short (wall_time, a kill) reports nothing
        finished = await process.call(
            runner.proc, runner.answer(), wall or None, runner.pid, hosted="exec" in request
        )
        found = runner.found if inside is not None and finished.error is None else None
        finished = replace(
            finished, peak_memory=runner.used[0], cpu_seconds=runner.used[1], found=found
        )
        if finished.error is not None or not runner.alive or runner.dirty:
            await self._retire_now(seat)
        elif found is None or runner.threads > 1 or any(f[3] is None for f in found):
            # the worker reads files in its root now, or a call left threads: stopped
            await self._stop_runner(seat)
        return finished

    @staticmethod
    def _request(
        a: Assignment,
        cwd: str,
        env: dict[str, str],
        argv: list[str] | None,
        append: bool,
        inside: dict[str, Any] | None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"cwd": cwd, "env": env}
        if poolable(a.spec):
            request["argv"] = list(a.spec.argv[3:])
        else:  # a command: `argv` as the worker would exec it
            request["exec"] = list(argv or a.spec.argv)
        if inside is not None:
            if not append:  # run again after a checkpoint: in the directory it has
                request["make"] = inside
            request["collect"] = list(a.spec.outputs)
            request["budget"] = [INLINE_MAX, INLINE_TOTAL]
        return request

    async def _runner(self, seat: _Seat, spec: TaskSpec, env: dict[str, str]) -> Runner | None:
        """The seat's runner, started if it has none; None when one cannot start."""
        if seat.runner is not None and seat.runner.alive:
            return seat.runner
        await self._retire_now(seat)
        make_dir(seat.root)
        shared, seat.maker = seat.root / SHARED, None
        if os.path.lexists(shared):  # made by a runner gone now, or by the worker itself
            await asyncio.to_thread(shutil.rmtree, shared, True)
        argv = [sys.executable, "-m", MODULE, SERVE]
        if self.guard.sandbox.bwrap:
            argv.append(PIDNS)  # a PID namespace of its own: every process in it is the job's
        # a cgroup name never used before: the last runner's may still be on its way out
        name = f"{seat.root.name}.{next(self._roots)}"
        launch = self.guard.launch(spec, argv, seat.root, name)
        # HOME and TMPDIR are the task's in each call; the process itself gets the root
        start_env = {**env, "HOME": str(seat.root), "TMPDIR": str(seat.root)}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log_path = seat.root.with_suffix(".log")  # outside the root: out of the task's reach
        try:
            with theirs, log_path.open("wb") as err:
                proc = await asyncio.create_subprocess_exec(
                    *launch.argv,
                    cwd=seat.root,
                    env=start_env,
                    stdin=theirs.fileno(),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=err,
                    start_new_session=True,
                    preexec_fn=launch.preexec,
                    pass_fds=launch.pass_fds,
                )
        except BaseException:
            ours.close()
            launch.release()
            raise
        finally:
            launch.started()  # the seccomp filter's fd: bwrap has its own
        runner = Runner(proc, ours, launch)
        try:
            ok = await asyncio.wait_for(runner.ready(), _START_TIMEOUT)
        except TimeoutError:
            ok = False
        if not ok:
            tail = log_path.read_bytes()[-2000:].decode(errors="replace")
            log.warning("a function runner did not start (a fresh process instead): %s", tail)
            await runner.stop()
            log_path.unlink(missing_ok=True)
            return None
        log_path.unlink(missing_ok=True)
        seat.runner = runner
        return runner

    @contextlib.asynccontextmanager
    async def seat_relay(self, a: Assignment, http: httpx.AsyncClient) -> AsyncIterator[str | None]:
        """While inside, the relay of the seat a claimed task runs on serves its job token:
        its CORRAL_URL. None: the task has no seat (or no token); it needs a relay of its own."""
        claim = self._claims.get(a.task_id)
        if claim is None or not a.token:
            yield None
            return
        seat = claim.seat
        if seat.relay is None:
            # the worker makes files in the runner's root: the runner stopped first, and a
            # link it left at the directory's name removed, not followed
            await self._stop_runner(seat)
            state = seat.root / STATE_DIR
            if os.path.islink(state):
                os.unlink(state)
            relay = Relay(http, None)
            await relay.listen(state / RELAY_SOCKET)
            seat.relay = relay
        relay = seat.relay
        relay.token = a.token
        try:
            yield relay.url
        finally:
            relay.token = None

    def _close_relay(self, seat: _Seat) -> None:
        if seat.relay is not None:
            self._background(seat.relay.close(remove=True))
            seat.relay = None

    def _retire(self, seat: _Seat, remove: bool = False) -> None:
        """Stop the seat's runner (in the background) and forget it; `remove`: then remove
        the seat's shared directories too (no task will use them)."""
        runner, seat.runner, seat.maker = seat.runner, None, None
        if runner is not None or remove:
            self._background(self._stop(runner, [seat.root / SHARED, seat.io] if remove else []))

    async def _stop(self, runner: Runner | None, remove: list[Path]) -> None:
        if runner is not None:
            await runner.stop()
        for path in remove:
            self.sweeper.remove(path)

    async def _retire_now(self, seat: _Seat) -> None:
        """`_retire`, waiting until its runner is gone: the worker touches its root next."""
        runner, seat.runner = seat.runner, None
        if runner is not None:
            await runner.stop()

    def _background(self, work: Awaitable[None]) -> None:
        future = asyncio.ensure_future(work)
        self._stopping.add(future)
        future.add_done_callback(self._stopping.discard)

    def _new_root(self) -> Path:
        return self.work_dir / "fn" / f"r{next(self._roots)}"

    def _sweep(self) -> None:
        """Remove the roots of replaced runners once empty (kept task dirs stay)."""
        for root in self._old_roots:
            with contextlib.suppress(OSError):
                root.rmdir()
        self._old_roots = [root for root in self._old_roots if root.exists()]

    def _forget_gone(self) -> None:
        """Free the seats of tasks that have ended. Their directories in a root go once the
        agent has removed the task's own (it keeps them with --keep-task-dirs), in a thread,
        as the agent's go (rmtree follows no symlinks)."""
        for task_id in [t for t in self._claims if not self.running(t)]:
            claim = self._claims.pop(task_id)
            claim.seat.task = None
            if not claim.shared:  # a shared claim's directories go with its seat
                self._ended.append(claim)
        kept = []
        for claim in self._ended:
            if os.path.lexists(claim.link):
                kept.append(claim)
            else:
                self.sweeper.remove(claim.inner)
        self._ended = kept[-_KEPT:]  # beyond that, kept ones are left alone

    async def aclose(self) -> None:
        """Stop every runner (the worker is leaving)."""
        for seat in self.seats:
            self._retire(seat, remove=not self.keep_task_dirs)
            self._close_relay(seat)
        self._forget_gone()
        if not self.keep_task_dirs:  # the agent's removals may still be on their way
            for claim in self._ended:
                self.sweeper.remove(claim.inner)
            for link in list(self._links):
                self.unlink(Path(link))
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        await self.sweeper.wait()
        self._old_roots += [seat.root for seat in self.seats]
        self._sweep()


def _link(target: Path, link: Path) -> None:
    """A symlink at `link` to `target`, replacing one an earlier worker left there."""
    try:
        os.symlink(target, link)
    except FileNotFoundError:
        make_dir(link.parent)
        os.symlink(target, link)
    except FileExistsError:
        if not os.path.islink(link):
            raise
        os.unlink(link)
        os.symlink(target, link)


def _alive(seat: _Seat) -> bool:
    return seat.runner is not None and seat.runner.alive


def _under(value: str, directory: str) -> bool:
    """Whether an env value names `directory` or a path inside it (CORRAL_CHECKPOINT_DIR)."""
    return value == directory or value.startswith(directory + "/")
