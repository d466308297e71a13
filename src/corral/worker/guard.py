"""What stands between a task and the worker's machine: allowlist, sandbox and limits.

The agent asks the Guard three things per task: may this program run (`refuse`), how to start
it (`launch`: the argv with its sandbox prefix, the user it runs as, the descriptors it
inherits and the function that sets its limits), and which limit, if any, explains how it
ended (`verdict`). The decisions are pure functions in allowlist.py, sandbox.py, limits.py and
taskuser.py; this module only gathers the facts they need.

A launch's child, between fork and exec, in this order: enters a mount namespace where the
task's user can reach its binds (root worker only, taskuser.reach), joins its cgroup and sets
its rlimits (still root: a slot uid could not join a root-owned cgroup), then becomes the
task's user with no_new_privs (taskuser.become).
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
from . import seccomp
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
    system_view,
    wants_network,
)
from .taskuser import Identity, TaskUsers, become, hand_over, reach, reach_for

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
    identity: Identity | None = None  # the host user it runs as; None: the worker's
    pass_fds: tuple[int, ...] = ()  # inherited by the child (the seccomp filter)
    reach: dict[Path, list[Path]] = field(default_factory=dict)  # taskuser.reach_plan
    users: TaskUsers | None = None  # where `identity` goes back to
    sandboxed: bool = False  # argv starts bwrap, which runs the task in a session of its own

    def usage(self) -> Usage | None:
        """What the task's cgroup counted (None without one); read before `close`."""
        return self.cgroup.usage() if self.cgroup is not None else None

    def started(self) -> None:
        """The child has its copies of the descriptors: close ours."""
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pass_fds = ()

    def release(self) -> None:
        """Give the task's uid back (its processes are gone) and close what is still open."""
        self.started()
        if self.users is not None:
            self.users.give_back(self.identity)
            self.users = None

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
    users: TaskUsers = field(default_factory=lambda: TaskUsers("self"))

    def capabilities(self) -> dict[str, Any]:
        """What the coordinator matches `requires sandbox=...` and `network=...` against."""
        return {
            "sandbox": self.sandbox.name,
            "network": self.sandbox.network,
            "allowlist": self.allow.mode,
            "processes_limit": self.processes_limit,
            "limits": self.limits,
            "task_user": self.users.mode,
            "seccomp": "yes" if self.sandbox.bwrap and self.sandbox.seccomp else "no",
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
        if os.geteuid() == 0 and self.users.mode == "self":
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
        """The sandboxed argv, the user and the limits for one task in `work` (`name` names
        its cgroup); `release` the Launch once its processes are gone."""
        processes = spec.limits.get("processes")
        identity = self.users.take()
        launch = Launch([], None, None, identity, users=self.users)
        try:
            hand_over(work, identity)
            if identity is not None:  # (without bwrap too: the Python must be reachable)
                launch.reach = reach_for(self.sandbox.sources(work), identity)
            fd = seccomp.seccomp_fd() if self.sandbox.bwrap and self.sandbox.seccomp else None
            launch.pass_fds = () if fd is None else (fd,)
        except BaseException:
            launch.release()
            raise
        group = self._cgroup(spec, name)  # also to measure it, and to find all of it
        pids = group is not None and self.cgroups is not None and self.cgroups.has("pids")
        memory = group is not None and self.cgroups is not None and self.cgroups.has("memory")
        inside = bool(processes) and not pids and self.sandbox.bwrap is not None
        nproc = int(processes) + 1 if inside and processes else None
        prefix = sandbox_prefix(self.sandbox, work, wants_network(spec.requires), nproc, fd)
        limits = rlimits(spec.limits, nproc=not inside and not pids, memory=not memory)
        launch.cgroup = group
        launch.argv = prefix + argv
        launch.sandboxed = bool(prefix)
        # the child joins its cgroups while still root, then becomes the task's user
        launch.preexec = _child(
            make_preexec(limits, group.procs if group else ()), identity, launch.reach
        )
        return launch

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
        if exit_code:  # limit_hit reads no messages of a task that exited 0 or not at all
            with contextlib.suppress(OSError), stderr.open("rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL))
                tail = f.read()
        which = limit_hit(limits, exit_code, tail, usage)
        return f"limit_exceeded: {which}" if which else None

    def close(self) -> None:
        """Remove the worker's cgroups."""
        if self.cgroups is not None:
            self.cgroups.close()


def _child(
    limits: Callable[[], None] | None,
    identity: Identity | None,
    plan: dict[Path, list[Path]],
) -> Callable[[], None] | None:
    """What a task's child does before exec (see the module docstring); None when nothing,
    so a task of a non-root worker without limits still starts through vfork."""
    if identity is None:
        return limits

    def preexec() -> None:
        reach(plan)
        if limits is not None:
            limits()
        become(identity)

    return preexec


def make_guard(
    work_dir: Path,
    allow: AllowPolicy,
    allow_network: bool = False,
    hide: tuple[Path, ...] = (),
    sandbox: bool = True,
    expose: tuple[Path, ...] = (),
    users: TaskUsers | None = None,
    expose_rw: tuple[Path, ...] = (),
) -> Guard:
    """Probe what this machine offers and say loudly what is missing."""
    users = users or TaskUsers("self")
    system = system_view()
    bwrap = _probe(work_dir, users, system) if sandbox else None
    if bwrap is None:
        why = "disabled by --no-sandbox" if not sandbox else _missing()
        log.warning(
            "WARNING: tasks run WITHOUT a sandbox (%s): they can read and write whatever "
            "%s can, and use the network. Only a process group, a clean environment and a "
            "working directory separate them. Install bubblewrap.",
            why,
            "this worker's user" if users.mode == "self" else "their task user",
        )
    filtered = seccomp.available()
    if bwrap and not filtered:
        log.warning(
            "WARNING: no system-call filter for tasks (%s): they keep every system call "
            "the sandbox's namespaces and dropped capabilities allow",
            seccomp.unavailable_reason(),
        )
    policy = SandboxPolicy(
        bwrap,
        allow_network=allow_network,
        hide=default_hidden(work_dir, hide),
        prlimit=shutil.which("prlimit") or "prlimit",
        expose=default_exposed(expose),
        sockets=default_sockets(),
        system=system,
        expose_rw=tuple(p.resolve() for p in expose_rw),
        seccomp=filtered,
    )
    guard = Guard(policy, allow, find_cgroups(f"{os.getpid()}"), users=users)
    if guard.processes_limit == "none":
        log.warning("WARNING: the processes limit is not enforced: root without a pids cgroup")
    log.info(
        "sandbox: %s; network: %s; allowlist: %s; processes limit: %s; limits: %s%s;"
        " task user: %s; seccomp: %s",
        policy.name,
        policy.network,
        allow.mode,
        guard.processes_limit,
        guard.limits,
        f" (cgroup v{guard.cgroups.version})" if guard.cgroups else "",
        users.mode,
        "yes" if bwrap and filtered else "no",
    )
    return guard


def _probe(
    work_dir: Path, users: TaskUsers, system: tuple[tuple[str, str, str], ...]
) -> str | None:
    """bwrap, if it can build a task's sandbox here as a task's user would run it."""
    identity = users.take()
    if identity is None:
        return probe(work_dir, system)
    where = work_dir / ".probe"
    where.mkdir(parents=True, exist_ok=True)
    launch = Launch([], None, identity=identity, users=users)
    try:
        hand_over(where, identity)
        policy = SandboxPolicy("bwrap", system=system, expose=default_exposed())
        launch.reach = reach_for(policy.sources(where), identity)
        return probe(where, system, _child(None, identity, launch.reach))
    finally:
        launch.release()
        shutil.rmtree(where, ignore_errors=True)


def _missing() -> str:
    if shutil.which("bwrap") is None:
        return "bwrap is not installed"
    if shutil.which("prlimit") is None:
        return "prlimit is not installed"
    return "bwrap is installed but cannot create namespaces here"
