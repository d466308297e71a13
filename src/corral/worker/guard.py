"""What stands between a task and the worker's machine: allowlist, sandbox and limits.

The agent asks the Guard three things per task: may this program run (`refuse`), how to start
it (`launch`: the argv with its sandbox prefix and the function that sets its limits), and
which limit, if any, explains how it ended (`verdict`). The decisions are pure functions in
allowlist.py, sandbox.py and limits.py; this module only gathers the facts they need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..protocol import TaskSpec
from .allowlist import (
    AllowPolicy,
    Facts,
    HashCache,
    env_problem,
    find_interpreters,
    refusal,
    resolve_program,
    resolve_script,
    startup_problem,
)
from .interpreters import interpreter_of, what_runs
from .limits import Cgroups, TaskCgroup, Usage, find_cgroups, limit_hit, make_preexec, rlimits
from .sandbox import (
    SandboxPolicy,
    default_exposed,
    default_hidden,
    default_sockets,
    probe,
    sandbox_prefix,
    wants_network,
)

__all__ = ["Guard", "Launch", "make_guard"]

log = logging.getLogger("corral.worker")
_TAIL = 8192
_CPU_POLL = 0.25  # seconds between looks at a task's CPU time: its overshoot, at most


@dataclass
class Launch:
    """How one task is started, and what to clean up after it."""

    argv: list[str]
    preexec: Callable[[], None] | None
    cgroup: TaskCgroup | None = None

    def usage(self) -> Usage | None:
        """What the task's cgroup counted (None without one); read before `close`."""
        return self.cgroup.usage() if self.cgroup is not None else None

    @contextlib.asynccontextmanager
    async def watching(self, cpu_time: float | None) -> AsyncIterator[None]:
        """While the task runs: kill all of it once its whole tree has used `cpu_time` CPU
        seconds (RLIMIT_CPU counts each process apart; the verdict then reads the cgroup)."""
        watch = None
        if cpu_time and self.cgroup is not None:
            watch = asyncio.ensure_future(_watch_cpu(self.cgroup, cpu_time))
        try:
            yield
        finally:
            if watch is not None:
                watch.cancel()

    def close(self) -> None:
        """Remove the task's cgroup, killing anything still in it."""
        if self.cgroup is not None:
            self.cgroup.close()


async def _watch_cpu(cgroup: TaskCgroup, seconds: float) -> None:
    while True:
        await asyncio.sleep(_CPU_POLL)
        used = cgroup.usage().cpu_seconds
        if used is not None and used >= seconds:
            cgroup.kill()
            return


@dataclass
class Guard:
    """The worker's policies, decided once at start."""

    sandbox: SandboxPolicy
    allow: AllowPolicy
    cgroups: Cgroups | None = None
    hashes: HashCache = field(default_factory=HashCache)
    interpreters: dict[str, str] | None = None  # sha256 -> kind, of those on PATH (lazily)

    def capabilities(self) -> dict[str, Any]:
        """What the coordinator matches `requires sandbox=...` and `network=...` against."""
        return {
            "sandbox": self.sandbox.name,
            "network": self.sandbox.network,
            "allowlist": self.allow.mode,
            "processes_limit": self.processes_limit,
            "limits": self.limits,
        }

    @property
    def limits(self) -> str:
        """How memory and processes are limited here: cgroup (the task's whole tree, with its
        peak memory and CPU time measured) or rlimit (per process)."""
        whole = self.cgroups is not None and self.cgroups.has("memory")
        return "cgroup" if whole and self.processes_limit == "cgroup" else "rlimit"

    @property
    def processes_limit(self) -> str:
        """How the processes limit is enforced here: cgroup, userns, rlimit or none."""
        if self.cgroups is not None and self.cgroups.has("pids"):
            return "cgroup"
        if os.geteuid() == 0:
            return "none"  # RLIMIT_NPROC never applies to uid 0
        return "userns" if self.sandbox.bwrap else "rlimit"

    def program(
        self, argv: list[str], cwd: Path, env: Mapping[str, str]
    ) -> tuple[Path | None, str | None]:
        """The file the command runs and its sha256 (None, None when it cannot be found)."""
        program = resolve_program(argv[0], cwd, env.get("PATH", os.defpath))
        if program is None:
            return None, None
        try:
            return program, self.hashes.sha256(program)
        except OSError:
            return program, None

    def refuse(self, argv: list[str], cwd: Path, env: Mapping[str, str]) -> str | None:
        """`not_allowed: ...` when the allowlist refuses the command, else None."""
        if self.allow.mode == "all":
            return None
        program, sha = self.program(argv, cwd, env)
        if program is None or sha is None or not self.allow.allows(sha):
            return refusal(self.allow, Facts(argv[0], program, sha))
        kind = self._kind(argv[0], program, sha)
        names: set[str] = set()
        if kind is not None:
            with contextlib.suppress(OSError):
                names = set(os.listdir(env.get("HOME", cwd)))
        facts = Facts(
            argv[0],
            program,
            sha,
            kind,
            env=env_problem(env, cwd) or startup_problem(kind, names),
        )
        if kind is not None:
            runs = what_runs(kind, argv[1:])
            script = resolve_script(runs.script, cwd) if runs.script else None
            facts = replace(facts, runs=runs, script=script, script_sha256=self._hash(script))
        return refusal(self.allow, facts)

    def _kind(self, argv0: str, program: Path, sha: str) -> str | None:
        """The interpreter a program is: by its name, argv[0]'s, or its hash (a renamed copy)."""
        kind = interpreter_of(program.name) or interpreter_of(Path(argv0).name)
        if kind is None and self.interpreters is None:
            path = os.pathsep.join((os.environ.get("PATH", ""), os.defpath))
            found = find_interpreters(path)
            self.interpreters = {h: k for p, k in found.items() if (h := self._hash(p))}
        return kind or (self.interpreters or {}).get(sha)

    def _hash(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return self.hashes.sha256(path)
        except OSError:
            return None

    def launch(self, spec: TaskSpec, argv: list[str], work: Path, name: str) -> Launch:
        """The sandboxed argv and the limits for one task (`name` names its cgroup)."""
        processes = spec.limits.get("processes")
        group = self._cgroup(spec, name)  # also to measure it, and to find all of it
        pids = group is not None and self.cgroups is not None and self.cgroups.has("pids")
        memory = group is not None and self.cgroups is not None and self.cgroups.has("memory")
        inside = bool(processes) and not pids and self.sandbox.bwrap is not None
        nproc = int(processes) + 1 if inside and processes else None
        prefix = sandbox_prefix(self.sandbox, work, wants_network(spec.requires), nproc)
        limits = rlimits(spec.limits, nproc=not inside and not pids, memory=not memory)
        preexec = make_preexec(limits, group.procs if group else ())
        return Launch(prefix + argv, preexec, group)

    def _cgroup(self, spec: TaskSpec, name: str) -> TaskCgroup | None:
        if self.cgroups is None:
            return None
        # the sandbox's own two bwrap processes live in the cgroup too
        extra = 2 if self.sandbox.bwrap else 0
        try:
            return TaskCgroup(self.cgroups, name, spec.limits, extra)
        except OSError as exc:  # then rlimits stand in, as on a machine without cgroups
            log.warning("task %s gets no cgroup: %s", name, exc)
            return None

    def verdict(
        self,
        limits: Mapping[str, float],
        exit_code: int | None,
        stderr: Path,
        usage: Usage | None = None,
    ) -> str | None:
        """`limit_exceeded: <which>` when a limit explains how the task ended, else None;
        `usage` is what its cgroup counted, when it had one."""
        tail = b""
        with contextlib.suppress(OSError), stderr.open("rb") as f:
            f.seek(max(0, stderr.stat().st_size - _TAIL))
            tail = f.read()
        which = limit_hit(limits, exit_code, tail, usage)
        return f"limit_exceeded: {which}" if which else None

    def close(self) -> None:
        """Remove the worker's cgroups."""
        if self.cgroups is not None:
            self.cgroups.close()


def make_guard(
    work_dir: Path,
    allow: AllowPolicy,
    allow_network: bool = False,
    hide: tuple[Path, ...] = (),
    sandbox: bool = True,
    expose: tuple[Path, ...] = (),
) -> Guard:
    """Probe what this machine offers and say loudly what is missing."""
    bwrap = probe(work_dir) if sandbox else None
    if bwrap is None:
        why = "disabled by --no-sandbox" if not sandbox else _missing()
        log.warning(
            "WARNING: tasks run WITHOUT a sandbox (%s): they can read and write whatever this "
            "worker's user can, and use the network. Only a process group, a clean "
            "environment and a working directory separate them. Install bubblewrap.",
            why,
        )
    policy = SandboxPolicy(
        bwrap,
        allow_network=allow_network,
        hide=default_hidden(work_dir, hide),
        prlimit=shutil.which("prlimit") or "prlimit",
        expose=default_exposed(expose),
        sockets=default_sockets(),
    )
    guard = Guard(policy, allow, find_cgroups(f"{os.getpid()}"))
    if guard.processes_limit == "none":
        log.warning("WARNING: the processes limit is not enforced: root without a pids cgroup")
    log.info(
        "sandbox: %s; network: %s; allowlist: %s; processes limit: %s; limits: %s%s",
        policy.name,
        policy.network,
        allow.mode,
        guard.processes_limit,
        guard.limits,
        f" (cgroup v{guard.cgroups.version})" if guard.cgroups else "",
    )
    return guard


def _missing() -> str:
    if shutil.which("bwrap") is None:
        return "bwrap is not installed"
    if shutil.which("prlimit") is None:
        return "prlimit is not installed"
    return "bwrap is installed but cannot create namespaces here"
