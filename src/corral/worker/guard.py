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

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocol import TaskSpec
from . import seccomp
from .allowlist import AllowPolicy, HashCache, refusal, resolve_program
from .limits import PidsCgroup, limit_hit, make_preexec, pids_cgroup_root, rlimits
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


@dataclass
class Launch:
    """How one task is started, and what to clean up after it."""

    argv: list[str]
    preexec: Callable[[], None] | None
    cgroup: PidsCgroup | None = None
    identity: Identity | None = None  # the host user it runs as; None: the worker's
    pass_fds: tuple[int, ...] = ()  # inherited by the child (the seccomp filter)
    reach: dict[Path, list[Path]] = field(default_factory=dict)  # taskuser.reach_plan
    users: TaskUsers | None = None  # where `identity` goes back to

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

    def close(self) -> None:
        """Remove the task's cgroup, killing anything still in it."""
        if self.cgroup is not None:
            self.cgroup.close()


@dataclass
class Guard:
    """The worker's policies, decided once at start."""

    sandbox: SandboxPolicy
    allow: AllowPolicy
    pids_root: Path | None = None
    hashes: HashCache = field(default_factory=HashCache)
    users: TaskUsers = field(default_factory=lambda: TaskUsers("self"))

    def capabilities(self) -> dict[str, Any]:
        """What the coordinator matches `requires sandbox=...` and `network=...` against."""
        return {
            "sandbox": self.sandbox.name,
            "network": self.sandbox.network,
            "allowlist": self.allow.mode,
            "processes_limit": self.processes_limit,
            "task_user": self.users.mode,
            "seccomp": "yes" if self.sandbox.bwrap and self.sandbox.seccomp else "no",
        }

    @property
    def processes_limit(self) -> str:
        """How the processes limit is enforced here: cgroup, userns, rlimit or none."""
        if self.pids_root is not None:
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
        return refusal(self.allow, argv[0], program, sha)

    def launch(self, spec: TaskSpec, argv: list[str], work: Path, name: str) -> Launch:
        """The sandboxed argv, the user and the limits for one task in `work`; `release`
        the Launch once its processes are gone."""
        processes = spec.limits.get("processes")
        cgroup = None
        if processes and self.pids_root is not None:
            # the sandbox's own two bwrap processes live in the cgroup too
            extra = 2 if self.sandbox.bwrap else 0
            cgroup = PidsCgroup(self.pids_root, name, int(processes) + extra)
        inside = bool(processes) and cgroup is None and self.sandbox.bwrap is not None
        nproc = int(processes) + 1 if inside and processes else None
        identity = self.users.take()
        launch = Launch([], None, cgroup, identity, users=self.users)
        try:
            hand_over(work, identity)
            if identity is not None:  # (without bwrap too: the Python must be reachable)
                launch.reach = reach_for(self.sandbox.sources(work), identity)
            fd = seccomp.seccomp_fd() if self.sandbox.bwrap and self.sandbox.seccomp else None
            launch.pass_fds = () if fd is None else (fd,)
        except BaseException:
            launch.release()
            raise
        prefix = sandbox_prefix(self.sandbox, work, wants_network(spec.requires), nproc, fd)
        limits = rlimits(spec.limits, nproc=not inside and cgroup is None)
        launch.argv = prefix + argv
        launch.preexec = _child(
            make_preexec(limits, cgroup.procs if cgroup else None), identity, launch.reach
        )
        return launch

    def verdict(
        self, limits: Mapping[str, float], exit_code: int | None, stderr: Path, launch: Launch
    ) -> str | None:
        """`limit_exceeded: <which>` when a limit explains how the task ended, else None."""
        tail = b""
        with contextlib.suppress(OSError), stderr.open("rb") as f:
            f.seek(max(0, stderr.stat().st_size - _TAIL))
            tail = f.read()
        pids_hit = launch.cgroup.hit() if launch.cgroup else False
        which = limit_hit(limits, exit_code, tail, pids_hit)
        return f"limit_exceeded: {which}" if which else None

    def close(self) -> None:
        """Remove the worker's cgroup."""
        if self.pids_root is not None:
            with contextlib.suppress(OSError):
                self.pids_root.rmdir()


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
    guard = Guard(policy, allow, pids_cgroup_root(f"{os.getpid()}"), users=users)
    if guard.processes_limit == "none":
        log.warning("WARNING: the processes limit is not enforced: root without a pids cgroup")
    log.info(
        "sandbox: %s; network: %s; allowlist: %s; processes limit: %s; task user: %s; seccomp: %s",
        policy.name,
        policy.network,
        allow.mode,
        guard.processes_limit,
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
