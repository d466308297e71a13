"""Running one task's process: its own session and process group, a clean environment,
stdout and stderr to files, the descriptors its sandbox needs (closed here once it has them),
a kill that takes the whole process tree with it, and an eviction (SIGTERM, a grace period,
then that kill; eviction.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

SAFE_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
T = TypeVar("T")


@dataclass(frozen=True)
class Finished:
    """How a process ended; a call to a pooled runner also says what it used."""

    exit_code: int | None
    error: str | None
    peak_memory: int | None = None  # bytes
    cpu_seconds: float | None = None
    # what a pooled runner found the call made or changed: (rel, mode, size, bytes or None)
    found: list[tuple[str, int, int, bytes | None]] | None = None


def command_line(
    argv: list[str], shell: bool, cwd: Path, shipped: Mapping[str, int] | None = None
) -> list[str]:
    """The argv to exec: a shell line, or argv with a shipped executable made runnable.
    `shipped`: the modes of the files `cwd` is to hold, where it does not hold them yet."""
    if shell:
        return ["/bin/sh", "-c", " ".join(argv)]
    first = argv[0]
    if "/" not in first:
        if shipped is not None:
            runnable = bool(shipped.get(first, 0) & 0o111)
        else:
            path = cwd / first
            runnable = path.is_file() and os.access(path, os.X_OK)
        if runnable:
            return [f"./{first}", *argv[1:]]
    return list(argv)


def task_env(declared: dict[str, str], home: Path, extra: dict[str, str]) -> dict[str, str]:
    """A clean environment: a small safe set from the worker, then what the task declares."""
    env = {k: os.environ[k] for k in SAFE_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = str(home)
    env["TMPDIR"] = str(home)
    env.update(extra)
    env.update(declared)
    return env


def signal_tree(pid: int, sig: int) -> None:
    """Send `sig` to a process group and every descendant, even re-parented ones."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for proc in descendants:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and every descendant, even re-parented ones."""
    signal_tree(pid, signal.SIGKILL)


class TaskProcess:
    """One running task process."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.killed = False
        self.terminating = False  # evicted: no process starts any more
        self.evicted = False  # an eviction ended (or prevented) the process
        self._ended = asyncio.Event()  # no process attached (none yet, or it ended)
        self._ended.set()
        self._call: tuple[int, bool] | None = None  # in a pooled runner: its Python, hosted
        self._wrapped = False  # the leader is the sandbox (bwrap), the task in a session below
        self._suspended = 0.0  # seconds spent stopped, not counted against wall_time
        self._stopped_at: float | None = None

    async def run(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        stdout: Path,
        stderr: Path,
        wall_time: float | None,
        preexec: Callable[[], None] | None = None,
        pass_fds: Sequence[int] = (),
        started: Callable[[], None] | None = None,
        append: bool = False,
        wrapped: bool = False,
    ) -> Finished:
        """Start the process and wait for it, enforcing a wall-time limit.

        `preexec` runs in the child before exec (rlimits, joining a cgroup, its user); the
        child inherits `pass_fds`; `started` runs once it exists (or failed to), to close
        the parent's copies; `append` keeps what stdout and stderr already hold (a task run
        again after saving a checkpoint); `wrapped`: argv starts the sandbox, which runs the
        task in a session of its own."""
        self._wrapped = wrapped
        if self.killed or self.terminating:  # before it started: it never does
            self.evicted = self.terminating
            return Finished(None, "killed")
        mode = "ab" if append else "wb"
        with stdout.open(mode) as out, stderr.open(mode) as err:
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=cwd,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    preexec_fn=preexec,
                    pass_fds=pass_fds,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                why = getattr(exc, "strerror", None) or exc
                return Finished(None, f"cannot start {argv[0]}: {why}")
            finally:
                if started is not None:
                    started()
        self._attached()
        try:
            code = await self._wait(asyncio.ensure_future(self.proc.wait()), wall_time)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
            return Finished(None, "limit_exceeded: wall_time")
        finally:
            # the leader may exit while its children run on: they go with it
            kill_tree(self.proc.pid)
            self._ended.set()
        return self._ending(code)

    async def call(
        self,
        proc: asyncio.subprocess.Process,
        reply: Awaitable[int | None],
        wall_time: float | None,
        inner: int = 0,
        hosted: bool = False,
    ) -> Finished:
        """Wait for one call made to a long-lived process (a pooled function runner, fnpool.py)
        as if it were this task's own process: `reply` is the call's exit code, or None when
        the process died in the call. Kill, suspend and wall_time act on its whole tree
        meanwhile; the Finished is what a fresh process ending the same way would give. An
        eviction's SIGTERM goes to the call alone: the runner's Python (`inner`) that makes
        a function call, or what it started for a `hosted` command, whose own handler then
        runs before the runner's end could take it down."""
        self.proc = proc
        self._call = (inner, hosted) if inner else None
        self._attached()
        try:
            try:
                code = await self._wait(asyncio.ensure_future(reply), wall_time)
            except TimeoutError:
                self.kill()
                await proc.wait()
                return Finished(None, "limit_exceeded: wall_time")
            if code is None:  # it died in the call: what remains of its tree goes too
                kill_tree(proc.pid)
                code = await proc.wait()
        finally:
            self._detach()
        return self._ending(code)

    def _ending(self, code: int) -> Finished:
        """How a process (or a call) that exited with `code` ended."""
        if self.killed:
            return Finished(code, "killed")
        if code < 0:
            return Finished(code, f"killed by signal {-code}")
        return Finished(code, None)

    def _attached(self) -> None:
        """A process (or a pooled runner's call) now runs for this task; one that an
        eviction or a kill asked for meanwhile (while it was being started) goes at once:
        a task just started has nothing new to save."""
        self._ended.clear()
        if self.killed or self.terminating:
            self.evicted = self.terminating
            assert self.proc is not None
            kill_tree(self.proc.pid)

    def _detach(self) -> None:
        """Let go of a long-lived process after a call; it runs on for the next task."""
        if self._stopped_at is not None:
            self.resume()
        self.proc = None
        self._call = None
        self._ended.set()

    async def _wait(self, done: asyncio.Future[T], wall_time: float | None) -> T:
        """Wait for `done` (the exit, or a call's answer); TimeoutError once the process has
        run (not counting time suspended) for `wall_time` seconds."""
        started = time.monotonic()
        while True:
            left = None
            if wall_time is not None:
                left = wall_time + self.suspended_for() - (time.monotonic() - started)
                if left <= 0:
                    raise TimeoutError
            try:
                return await asyncio.wait_for(asyncio.shield(done), left)
            except TimeoutError:
                continue  # time spent suspended may have moved the deadline

    def suspended_for(self) -> float:
        """Seconds this task has spent suspended so far."""
        ongoing = time.monotonic() - self._stopped_at if self._stopped_at is not None else 0.0
        return self._suspended + ongoing

    def suspend(self) -> None:
        """SIGSTOP the whole process tree (the owner of the machine is back)."""
        if self.proc is not None and self.proc.returncode is None and self._stopped_at is None:
            self._stopped_at = time.monotonic()
            signal_tree(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the whole process tree."""
        if self.proc is not None and self._stopped_at is not None:
            self._suspended += time.monotonic() - self._stopped_at
            self._stopped_at = None
            signal_tree(self.proc.pid, signal.SIGCONT)

    async def terminate(self, grace: float) -> bool:
        """Evict: SIGTERM the task's processes (resumed, if suspended, so that they see the
        signal), wait up to `grace` seconds for them to end, then SIGKILL the whole tree. A
        process not started yet never starts. True when it ended within the grace."""
        self.terminating = True
        if self._ended.is_set() or self.proc is None:
            return True
        self.evicted = True
        procs = self._task_processes(self.proc.pid) if self._call or self._wrapped else []
        if not procs:  # not wrapped, or nothing of the task runs inside yet
            signal_tree(self.proc.pid, signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
        self.resume()
        try:
            await asyncio.wait_for(self._ended.wait(), grace)
            return True
        except TimeoutError:
            self.kill()
            return False

    def _task_processes(self, leader: int) -> list[psutil.Process]:
        """The processes an eviction's SIGTERM is for, below what would SIGKILL them first
        if it died of it: under bwrap, what runs in the sandbox's own session (bwrap dies of
        SIGTERM, and its --die-with-parent child takes the sandbox down with it); in a pooled
        runner, a hosted command's processes, or the runner's Python making a function call
        with whatever the function started."""
        try:
            if self._call is not None:
                inner, hosted = self._call
                python = psutil.Process(inner)
                return python.children(recursive=True) + ([] if hosted else [python])
            sid = os.getsid(leader)
            return [
                p for p in psutil.Process(leader).children(recursive=True) if _sid(p.pid) != sid
            ]
        except (psutil.Error, OSError):
            return []

    def kill(self) -> None:
        """Stop the whole process tree now."""
        self.killed = True
        if self.proc is not None and self.proc.returncode is None:
            kill_tree(self.proc.pid)
