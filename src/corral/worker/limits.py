"""Per-task resource limits: what to set before the task starts, and which one it hit.

Mechanisms, in order of preference; the worker picks one at start (`find_cgroups`), by what
it can create and write:

1. cgroup v2 (the unified hierarchy, root-owned or delegated to the worker's user, with the
   memory and pids controllers): each task gets a cgroup of its own under the worker's
   `corral-<pid>`, with memory.max (memory.swap.max 0, and memory.oom.group 1 so an OOM kill
   takes the whole task) and pids.max. cpu.stat's usage_usec is its CPU time, memory.peak its
   peak memory; memory.events' oom_kill and pids.events' max say which limit stopped it.
2. cgroup v1 (one hierarchy per controller, as on hybrid systems): the same with
   memory.limit_in_bytes, pids.max and cpuacct.usage; memory.max_usage_in_bytes is the peak,
   memory.oom_control's oom_kill (before Linux 4.13: memory.failcnt and a SIGKILL) and
   pids.events say which limit stopped it. Each controller is used if its hierarchy is
   writable, the others fall back as below.
3. rlimits where no cgroup can be written (a non-root worker without a delegated v2 tree):
   RLIMIT_AS per process for memory, RLIMIT_NPROC inside the sandbox's user namespace for
   processes; no peak memory or CPU seconds are reported.

In a cgroup a task's whole tree counts: four processes holding a quarter of the memory limit
each are as far over it as one holding all of it, which RLIMIT_AS (per process, and counting
address space rather than memory used) lets through. The cgroup also finds every process of a
task at its end, daemonized or not: `TaskCgroup.close` kills what is in it, then removes it.

    limit         how it is enforced
    wall_time     the executor kills the process tree after this many seconds
    cpu_time      RLIMIT_CPU per process (SIGXCPU at the limit, SIGKILL a second later); in
                  a cgroup the worker also watches the whole tree's CPU time (guard.py's
                  `Launch.watching`) and kills all of it at the limit
    memory        the cgroup's memory limit on the whole tree; else RLIMIT_AS per process
    file_size     RLIMIT_FSIZE: largest file a process may write, in bytes
    processes     the cgroup's pids.max; else RLIMIT_NPROC inside the sandbox's own user
                  namespace, where it counts only the task's processes; with no sandbox
                  RLIMIT_NPROC counts every process of the worker's uid, and the kernel never
                  applies it to root
    output_size   the worker refuses to return more than this many bytes of files

Which limit a failed task hit comes from its cgroup's counters where it has one, else from a
best guess on its exit status (a signal, or 128 + signal from a shell or bwrap) and the tail
of its stderr.

A task joins its cgroups between fork and exec (`make_preexec`), while it still has the
worker's rights, and only then drops to the task's user if it has one: CPython's Popen
`user=` changes uid before preexec_fn runs, too early for cgroup v2, where the writer of
cgroup.procs needs write access to the common ancestor of the old and new cgroup. Rejected:
the worker writing the child's pid after the spawn (what the child forks before that escapes)
and chowning the task's cgroup to the task's user (v2 still refuses the move, and the task
could raise its own limits).

The decisions are pure (`locate`, `cgroup_settings`, `read_usage`, `limit_hit`); `find_cgroups`
and `TaskCgroup` do the file I/O.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..protocol import format_size

__all__ = [
    "Cgroups",
    "TaskCgroup",
    "Usage",
    "cgroup_settings",
    "find_cgroups",
    "limit_hit",
    "locate",
    "make_preexec",
    "output_size_error",
    "read_usage",
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

# controller -> a file whose presence in a new child shows the controller works there
_V1_PROBES = {"memory": "memory.limit_in_bytes", "pids": "pids.max", "cpuacct": "cpuacct.usage"}
_V2_NEEDED = ("memory", "pids")
# controller -> the files read at a task's end
_USAGE_FILES = {
    1: {
        "memory": ("memory.max_usage_in_bytes", "memory.oom_control", "memory.failcnt"),
        "pids": ("pids.events",),
        "cpuacct": ("cpuacct.usage",),
    },
    2: {"memory": ("memory.peak", "memory.events"), "pids": ("pids.events",), "cpu": ("cpu.stat",)},
}
_WORKER_LEAF = "worker"  # v2: where the worker moves when its own cgroup must hand down
_OPTIONAL = frozenset({"memory.swap.max", "memory.oom.group"})  # absent without swap, or old


def _count(value: float) -> int:
    return max(1, math.ceil(value))


def rlimits(
    limits: Mapping[str, float], nproc: bool, memory: bool = True
) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) to set on the task; RLIMIT_NPROC too when `nproc` is true, and
    RLIMIT_AS only when `memory` is (a cgroup limits memory otherwise)."""
    out = [(resource.RLIMIT_CORE, 0, 0)]  # a core file would come back as an output
    for key, res in _RLIMITS.items():
        value = limits.get(key)
        if value and (memory or key != "memory"):
            soft = _count(value)
            out.append((res, soft, soft + 1 if key == "cpu_time" else soft))
    processes = limits.get("processes")
    if nproc and processes:
        out.append((resource.RLIMIT_NPROC, _count(processes), _count(processes)))
    return out


def make_preexec(
    limits: list[tuple[int, int, int]],
    cgroup_procs: Sequence[Path] = (),
    user: tuple[int, int] | None = None,
) -> Callable[[], None] | None:
    """A function to run in the child between fork and exec: join the cgroups, set rlimits,
    then become `user` (uid, gid) when given, in that order (see the module docstring).

    None when there is nothing to do, so the task starts through vfork rather than fork, which
    costs a copy of the worker's page tables on every task."""
    if not limits and not cgroup_procs and user is None:
        return None
    procs = list(cgroup_procs)

    def preexec() -> None:
        for path in procs:
            with path.open("w") as f:
                f.write(str(os.getpid()))
        for res, soft, hard in limits:
            resource.setrlimit(res, (soft, min(hard, resource.getrlimit(res)[1])))
        if user is not None:
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])

    return preexec


@dataclass(frozen=True)
class Usage:
    """What a task's cgroup counted; None where the machine does not say."""

    peak_memory: int | None = None  # bytes
    cpu_seconds: float | None = None
    oom_kills: int | None = None  # processes the OOM killer took (None: not counted here)
    memory_failcnt: int = 0  # times usage hit the limit (v1; reclaim may have saved it)
    pids_refused: int = 0  # forks refused at pids.max


def _signal_of(exit_code: int) -> int:
    if exit_code < 0:
        return -exit_code
    return exit_code - 128 if 128 < exit_code < 160 else 0


def output_size_error(sizes: Mapping[str, int], cap: float, shown: int = 3) -> str | None:
    """The error of a task whose output files (path -> bytes) exceed `cap` bytes in all, with
    the sizes and the largest files, so the owner sees what to trim; None within the cap."""
    total = sum(sizes.values())
    if total <= cap:
        return None
    largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:shown]
    named = ", ".join(f"{path} {format_size(n)}" for path, n in largest)
    more = f" and {len(sizes) - shown} more" if len(sizes) > shown else ""
    files = f"{len(sizes)} file{'s' if len(sizes) != 1 else ''}"
    return (
        f"limit_exceeded: output_size ({format_size(total)} in {files} of"
        f" {format_size(cap)}; largest: {named}{more})"
    )


def limit_hit(
    limits: Mapping[str, float],
    exit_code: int | None,
    stderr_tail: bytes,
    usage: Usage | None = None,
) -> str | None:
    """Which limit a task that ended with `exit_code` hit (or most likely did), or None."""
    usage = usage or Usage()
    if usage.pids_refused and limits.get("processes"):
        return "processes"
    if exit_code is None or exit_code == 0:
        return None
    sig = _signal_of(exit_code)
    if limits.get("memory"):
        if usage.oom_kills:
            return "memory"
        if usage.oom_kills is None and usage.memory_failcnt and sig == signal.SIGKILL:
            return "memory"  # a kernel that counts no OOM kills
    cpu = limits.get("cpu_time")
    if cpu and usage.cpu_seconds is not None and usage.cpu_seconds >= cpu:
        if sig in (signal.SIGKILL, signal.SIGXCPU):
            return "cpu_time"
    which = _SIGNALS.get(sig)
    if which and limits.get(which):
        return which
    for key, needles in _MESSAGES.items():
        if limits.get(key) and any(n in stderr_tail for n in needles):
            return key
    return None


def _counters(text: str) -> dict[str, int]:
    """`key value` lines (memory.events, pids.events, cpu.stat, memory.oom_control)."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def read_usage(version: int, texts: Mapping[str, str]) -> Usage:
    """A task's Usage from the contents of its cgroup's files (file name -> text)."""
    pids = _counters(texts.get("pids.events", "")).get("max", 0)
    if version == 2:
        usec = _counters(texts.get("cpu.stat", "")).get("usage_usec")
        events = texts.get("memory.events")
        return Usage(
            peak_memory=_int(texts.get("memory.peak")),
            cpu_seconds=None if usec is None else usec / 1e6,
            oom_kills=None if events is None else _counters(events).get("oom_kill", 0),
            pids_refused=pids,
        )
    nsec = _int(texts.get("cpuacct.usage"))
    oom = texts.get("memory.oom_control")
    return Usage(
        peak_memory=_int(texts.get("memory.max_usage_in_bytes")),
        cpu_seconds=None if nsec is None else nsec / 1e9,
        oom_kills=None if oom is None else _counters(oom).get("oom_kill"),
        memory_failcnt=_int(texts.get("memory.failcnt")) or 0,
        pids_refused=pids,
    )


def cgroup_settings(
    version: int, limits: Mapping[str, float], extra_pids: int = 0
) -> dict[str, dict[str, str]]:
    """controller -> {file: value} to write into a task's new cgroup before it joins.

    `extra_pids` counts processes that are not the task's (the sandbox's own)."""
    out: dict[str, dict[str, str]] = {}
    memory, processes = limits.get("memory"), limits.get("processes")
    if memory:
        if version == 2:
            # no swap to spill into; an OOM kill takes the whole task, not one process of it
            out["memory"] = {"memory.max": str(_count(memory)), "memory.swap.max": "0"}
            out["memory"]["memory.oom.group"] = "1"
        else:
            out["memory"] = {"memory.limit_in_bytes": str(_count(memory))}
    if processes:
        out["pids"] = {"pids.max": str(_count(processes) + extra_pids)}
    return out


def _v1_mounts(mountinfo: str) -> dict[str, tuple[Path, str]]:
    """v1 controller -> (its hierarchy's mount point, the hierarchy path mounted there)."""
    out: dict[str, tuple[Path, str]] = {}
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] != "cgroup":
            continue
        for option in tail[2].split(","):
            out.setdefault(option, (Path(fields[4]), fields[3]))
    return out


def _v2_mount(mountinfo: str) -> tuple[Path, str] | None:
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields = before.split()
        if len(fields) >= 5 and after.split()[:1] == ["cgroup2"]:
            return Path(fields[4]), fields[3]
    return None


def _under(mount: tuple[Path, str], path: str) -> Path | None:
    """The directory of hierarchy path `path` through a mount of hierarchy path `mount[1]`."""
    point, root = mount
    rel = os.path.relpath(path, root)
    return None if rel.startswith("..") else point / rel


def locate(proc_cgroup: str, mountinfo: str) -> tuple[dict[str, Path], Path | None]:
    """The process's own cgroup directory for each v1 controller, and its v2 one (or None),
    from /proc/self/cgroup and /proc/self/mountinfo."""
    v1_mounts, v2_mount = _v1_mounts(mountinfo), _v2_mount(mountinfo)
    v1: dict[str, Path] = {}
    v2 = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, names, path = parts
        if not names:
            v2 = _under(v2_mount, path) if v2_mount else None
            continue
        for name in names.split(","):
            mount = v1_mounts.get(name)
            where = _under(mount, path) if mount else None
            if where is not None:
                v1[name] = where
    return v1, v2


@dataclass(frozen=True)
class Cgroups:
    """Where a worker makes its tasks' cgroups: controller -> the worker's directory (one
    per v1 hierarchy; in v2 the same one for every controller)."""

    version: int
    roots: Mapping[str, Path]

    def has(self, controller: str) -> bool:
        """Whether tasks get this controller's limit from the cgroup."""
        return controller in self.roots

    @property
    def dirs(self) -> list[Path]:
        """The distinct directories under which a task's cgroups go."""
        return list(dict.fromkeys(self.roots.values()))

    def close(self) -> None:
        """Empty and remove what tasks left (a runner whose start failed), then the
        worker's directories."""
        for root in self.dirs:
            with contextlib.suppress(OSError):
                for child in root.iterdir():
                    if child.is_dir() and child.name != _WORKER_LEAF:  # v2: the worker itself
                        _empty(child, 1.0)
            with contextlib.suppress(OSError):
                root.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


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


def _probe(root: Path, probe_file: str) -> bool:
    """Whether a child of `root` can be made and shows `probe_file`."""
    probe = root / "probe"
    try:
        probe.mkdir(exist_ok=True)
        ok = (probe / probe_file).is_file()
        probe.rmdir()
    except OSError:
        return False
    return ok


def _setup_v1(own: Mapping[str, Path], tag: str) -> Cgroups | None:
    roots = {}
    for controller, probe_file in _V1_PROBES.items():
        base = own.get(controller)
        if base is None:
            continue
        _sweep(base)
        root = base / f"corral-{tag}"
        with contextlib.suppress(OSError):
            root.mkdir(exist_ok=True)
            if _probe(root, probe_file):
                roots[controller] = root
                continue
        with contextlib.suppress(OSError):
            root.rmdir()
    return Cgroups(1, roots) if roots else None


def _enable(cgroup: Path) -> None:
    (cgroup / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in _V2_NEEDED))


def _setup_v2(own: Path, tag: str) -> Cgroups | None:
    if not set(_V2_NEEDED) <= set(_read(own / "cgroup.controllers").split()):
        return None
    _sweep(own)
    root = own / f"corral-{tag}"
    try:
        root.mkdir(exist_ok=True)
        if not set(_V2_NEEDED) <= set(_read(own / "cgroup.subtree_control").split()):
            try:
                _enable(own)
            except OSError:
                # v2 lets a cgroup with processes in it (the worker) hand no controllers
                # down, the root excepted: the worker moves into a leaf of its own first
                (root / _WORKER_LEAF).mkdir(exist_ok=True)
                (root / _WORKER_LEAF / "cgroup.procs").write_text(str(os.getpid()))
                _enable(own)
        _enable(root)
    except OSError:
        return None
    # the kernel lists what the parent handed down: tasks' cgroups get these
    if not set(_V2_NEEDED) <= set(_read(root / "cgroup.controllers").split()):
        return None
    return Cgroups(2, {"memory": root, "pids": root, "cpu": root})


def find_cgroups(
    tag: str, proc_cgroup: str | None = None, mountinfo: str | None = None
) -> Cgroups | None:
    """The cgroups this worker can give its tasks (v2 first, then v1), or None: rlimits.

    `proc_cgroup` and `mountinfo` stand for /proc/self's files (tests use a fake tree)."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup"))
    if mountinfo is None:
        mountinfo = _read(Path("/proc/self/mountinfo"))
    v1, v2 = locate(proc_cgroup, mountinfo)
    found = _setup_v2(v2, tag) if v2 is not None else None
    return found or _setup_v1(v1, tag)


class TaskCgroup:
    """One task's cgroup (one per v1 hierarchy): its limits, what it used, and its end."""

    def __init__(
        self, cgroups: Cgroups, name: str, limits: Mapping[str, float], extra_pids: int = 0
    ) -> None:
        self.version = cgroups.version
        self.paths = {c: root / name for c, root in cgroups.roots.items()}
        self.dirs = list(dict.fromkeys(self.paths.values()))
        try:
            for path in self.dirs:
                path.mkdir(exist_ok=True)
            for controller, files in cgroup_settings(self.version, limits, extra_pids).items():
                for file, value in files.items():
                    self._write(controller, file, value)
        except OSError:
            self.close()
            raise

    def _write(self, controller: str, file: str, value: str) -> None:
        path = self.paths.get(controller)
        if path is None:
            return  # not in a cgroup here: the rlimit stands in (the Guard decides)
        try:
            (path / file).write_text(value)
        except FileNotFoundError:
            if file not in _OPTIONAL:
                raise

    @property
    def procs(self) -> list[Path]:
        """The files a process writes its pid into to join."""
        return [path / "cgroup.procs" for path in self.dirs]

    def usage(self) -> Usage:
        """What the task used and which limits the kernel enforced, so far."""
        texts = {}
        for controller, files in _USAGE_FILES[self.version].items():
            path = self.paths.get(controller)
            if path is None:
                continue
            for file in files:
                with contextlib.suppress(OSError):
                    texts[file] = (path / file).read_text()
        return read_usage(self.version, texts)

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (it stays, to be read and closed)."""
        _kill_all(self.dirs[0])

    def close(self, timeout: float = 5.0) -> None:
        """SIGKILL whatever is left in the cgroup, then remove it."""
        for path in self.dirs:
            _empty(path, timeout)


def _kill_all(path: Path) -> bool:
    """SIGKILL what is in one cgroup directory; False when it is gone."""
    try:
        pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return False
    kill = path / "cgroup.kill"  # v2, Linux 5.14: kills all at once, forks in flight too
    if pids and kill.exists():
        with contextlib.suppress(OSError):
            kill.write_text("1")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return True


def _empty(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _kill_all(path):
        with contextlib.suppress(OSError):
            path.rmdir()
            return
        time.sleep(0.02)
