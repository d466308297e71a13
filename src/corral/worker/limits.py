"""Per-task resource limits: what to set before the task starts, and which one it hit.

    limit         how it is enforced
    wall_time     the executor kills the process tree after this many seconds
    cpu_time      RLIMIT_CPU (SIGXCPU at the limit, SIGKILL one second later), per process
    memory        RLIMIT_AS: address space of each process, in bytes
    file_size     RLIMIT_FSIZE: largest file a process may write, in bytes
    processes     a pids cgroup (pids.max) when the worker can create one (root, or a delegated
                  cgroup); else RLIMIT_NPROC inside the sandbox's own user namespace, where it
                  counts only the task's processes; with no sandbox RLIMIT_NPROC counts every
                  process of the worker's uid, and the kernel never applies it to root
    output_size   the worker refuses to return more than this many bytes of files

Which limit a failed task hit is a best guess from its exit status (a signal, or 128 + signal
from a shell or bwrap), the tail of its stderr, and the pids cgroup's event counter.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = [
    "PidsCgroup",
    "limit_hit",
    "make_preexec",
    "pids_cgroup_root",
    "rlimits",
]

_RLIMITS = {
    "cpu_time": resource.RLIMIT_CPU,
    "memory": resource.RLIMIT_AS,
    "file_size": resource.RLIMIT_FSIZE,
}
_SIGNALS: dict[int, str] = {int(signal.SIGXCPU): "cpu_time", int(signal.SIGXFSZ): "file_size"}
_MESSAGES = {
    "memory": (b"MemoryError", b"Cannot allocate memory", b"out of memory", b"bad_alloc"),
    "file_size": (b"File too large", b"File size limit exceeded"),
    "processes": (b"Resource temporarily unavailable", b"Cannot fork", b"fork: retry"),
}


def _count(value: float) -> int:
    return max(1, math.ceil(value))


def rlimits(limits: Mapping[str, float], nproc: bool) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) to set on the task; RLIMIT_NPROC too when `nproc` is true."""
    out = [(resource.RLIMIT_CORE, 0, 0)]  # a core file would come back as an output
    for key, res in _RLIMITS.items():
        value = limits.get(key)
        if value:
            soft = _count(value)
            out.append((res, soft, soft + 1 if key == "cpu_time" else soft))
    processes = limits.get("processes")
    if nproc and processes:
        out.append((resource.RLIMIT_NPROC, _count(processes), _count(processes)))
    return out


def make_preexec(
    limits: list[tuple[int, int, int]], cgroup_procs: Path | None
) -> Callable[[], None] | None:
    """A function to run in the child between fork and exec: join the cgroup, set rlimits.

    None when there is nothing to do, so the task starts through vfork rather than fork, which
    costs a copy of the worker's page tables on every task."""
    if not limits and cgroup_procs is None:
        return None

    def preexec() -> None:
        if cgroup_procs is not None:
            with cgroup_procs.open("w") as f:
                f.write(str(os.getpid()))
        for res, soft, hard in limits:
            resource.setrlimit(res, (soft, min(hard, resource.getrlimit(res)[1])))

    return preexec


def _signal_of(exit_code: int) -> int:
    if exit_code < 0:
        return -exit_code
    return exit_code - 128 if 128 < exit_code < 160 else 0


def limit_hit(
    limits: Mapping[str, float], exit_code: int | None, stderr_tail: bytes, pids_hit: bool
) -> str | None:
    """Which limit a task that ended with `exit_code` most likely hit, or None."""
    if pids_hit and limits.get("processes"):
        return "processes"
    if exit_code is None or exit_code == 0:
        return None
    which = _SIGNALS.get(_signal_of(exit_code))
    if which and limits.get(which):
        return which
    for key, needles in _MESSAGES.items():
        if limits.get(key) and any(n in stderr_tail for n in needles):
            return key
    return None


def _own_cgroup(controller: str) -> tuple[Path, bool] | None:
    """The worker's own cgroup directory holding `controller`, and whether it is v2."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            if controller in names.split(","):
                return Path("/sys/fs/cgroup", controller) / path.lstrip("/"), False
        unified = Path("/sys/fs/cgroup")
        controllers = unified / "cgroup.controllers"
        if controllers.is_file() and controller in controllers.read_text().split():
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                if line.startswith("0::"):
                    return unified / line[3:].lstrip("/"), True
    return None


def _sweep(base: Path) -> None:
    """Remove empty cgroups left by workers that were killed (named after their dead pid)."""
    with contextlib.suppress(OSError):
        for old in base.glob("corral-*"):
            pid = old.name.removeprefix("corral-")
            if not pid.isdigit() or Path(f"/proc/{pid}").exists():
                continue
            for child in (c for c in old.iterdir() if c.is_dir()):
                with contextlib.suppress(OSError):
                    child.rmdir()  # fails, harmlessly, while processes remain
            with contextlib.suppress(OSError):
                old.rmdir()


def pids_cgroup_root(tag: str) -> Path | None:
    """A fresh cgroup (v1 or v2) under which task cgroups get pids.max, or None if not allowed."""
    found = _own_cgroup("pids")
    if found is None:
        return None
    base, v2 = found
    _sweep(base)
    root = base / f"corral-{tag}"
    try:
        root.mkdir(exist_ok=True)
        if v2:
            (root / "cgroup.subtree_control").write_text("+pids")
        probe = root / "probe"
        probe.mkdir(exist_ok=True)
        ok = (probe / "pids.max").is_file()
        probe.rmdir()
    except OSError:
        with contextlib.suppress(OSError):
            root.rmdir()
        return None
    return root if ok else None


class PidsCgroup:
    """One task's pids cgroup: bounds its process count and kills all of it at the end."""

    def __init__(self, root: Path, name: str, max_pids: int) -> None:
        self.path = root / name
        self.path.mkdir(exist_ok=True)
        (self.path / "pids.max").write_text(str(max_pids))

    @property
    def procs(self) -> Path:
        """The file a process writes its pid into to join."""
        return self.path / "cgroup.procs"

    def hit(self) -> bool:
        """Whether a fork was refused because the cgroup was full."""
        with contextlib.suppress(OSError, ValueError):
            for line in (self.path / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value) > 0
        return False

    def close(self, timeout: float = 5.0) -> None:
        """SIGKILL whatever is left in the cgroup, then remove it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pids = [int(p) for p in self.procs.read_text().split()]
            except OSError:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                self.path.rmdir()
                return
            time.sleep(0.02)
