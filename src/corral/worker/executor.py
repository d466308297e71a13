"""Running one task's process: its own session and process group, a clean environment,
stdout and stderr to files, and a kill that takes the whole process tree with it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

SAFE_ENV = ("PATH", "LANG", "LC_ALL", "TZ")


@dataclass(frozen=True)
class Finished:
    """How a process ended."""

    exit_code: int | None
    error: str | None


def command_line(argv: list[str], shell: bool, cwd: Path) -> list[str]:
    """The argv to exec: a shell line, or argv with a shipped executable made runnable."""
    if shell:
        return ["/bin/sh", "-c", " ".join(argv)]
    first = argv[0]
    shipped = cwd / first
    if "/" not in first and shipped.is_file() and os.access(shipped, os.X_OK):
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


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and every descendant, even re-parented ones."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for proc in descendants:
        with contextlib.suppress(psutil.Error):
            proc.kill()


class TaskProcess:
    """One running task process."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.killed = False

    async def run(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        stdout: Path,
        stderr: Path,
        wall_time: float | None,
        preexec: Callable[[], None] | None = None,
    ) -> Finished:
        """Start the process and wait for it, enforcing a wall-time limit.

        `preexec` runs in the child before exec (rlimits, joining a cgroup)."""
        with stdout.open("wb") as out, stderr.open("wb") as err:
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
                )
            except (OSError, subprocess.SubprocessError) as exc:
                why = getattr(exc, "strerror", None) or exc
                return Finished(None, f"cannot start {argv[0]}: {why}")
        try:
            code = await asyncio.wait_for(self.proc.wait(), wall_time)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
            return Finished(None, "limit_exceeded: wall_time")
        finally:
            # the leader may exit while its children run on: they go with it
            kill_tree(self.proc.pid)
        if self.killed:
            return Finished(code, "killed")
        if code < 0:
            return Finished(code, f"killed by signal {-code}")
        return Finished(code, None)

    def kill(self) -> None:
        """Stop the whole process tree now."""
        self.killed = True
        if self.proc is not None and self.proc.returncode is None:
            kill_tree(self.proc.pid)
