"""Who a task runs as on the host, and how that user reaches the files it is given.

The `task_user` capability says which of three modes a worker uses:

    self        a non-root worker: tasks run as the worker's own user (inside bwrap's user
                namespace, mapped to itself, with no capabilities)
    slot-uids   a root worker (the default there): each task, and each function runner, runs
                as its own unprivileged host uid from a range no account owns (60000-60999
                unless `--task-uids START-END`), as HTCondor's slot users. A uid is taken with
                an exclusive lock in /run/corral/task-uids, shared by every worker on the
                machine, and only while no process runs as it, so two tasks running at once
                never share one, whichever worker runs them; the lock goes when the task does.
    user        a root worker given `--task-user NAME`: every task runs as that account. Tasks
                then share a uid; their namespaces still keep them apart.

The uid is the host's: bwrap is started as that user, unprivileged, and makes a user
namespace mapping it to itself (never to root). A root worker's task directory is handed to
the task's uid (0700), so other tasks cannot read it; the worker, as root, still reads it.

bwrap resolves every path it binds as the user that runs it, so a directory under one that
user cannot search (a pyenv Python in root's home, a work dir under a 0700 parent) would stop it.
`reach_plan` finds those blocking parents; in the launching child, still root, `reach` covers
each with a tmpfs of its own private mount namespace holding only the paths to bind, bound back
at their own paths. Nothing else under the blocked directory becomes visible, to bwrap or the task.

Rejected: `bwrap --uid N` run as root maps the task's uid to root outside the namespace; and
making the blocking directories searchable would change the machine's permissions.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pwd
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_UIDS",
    "Identity",
    "TaskUsers",
    "become",
    "hand_over",
    "reach",
    "reach_for",
    "reach_plan",
]

DEFAULT_UIDS = (60000, 60999)
LOCK_DIR = Path("/run/corral/task-uids")
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
_PR_SET_NO_NEW_PRIVS = 38


@dataclass(frozen=True)
class Identity:
    """A host user a task runs as; `lock` holds its uid while the task runs (slot uids)."""

    uid: int
    gid: int
    lock: int | None = None


@dataclass
class TaskUsers:
    """This worker's task-user mode and, for slot uids, where to take one from."""

    mode: str  # self, slot-uids or user
    uids: tuple[int, int] = DEFAULT_UIDS
    user: Identity | None = None  # --task-user
    lock_dir: Path = LOCK_DIR
    _held: set[int] = field(default_factory=set)

    @classmethod
    def choose(
        cls, uids: tuple[int, int] | None = None, user: str | None = None, root: bool = False
    ) -> TaskUsers:
        """The mode for a worker started with these options (`root`: it runs as uid 0).

        ValueError when the range overlaps an account or NAME is not a usable account."""
        if not root:
            return cls("self")
        if user is not None:
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise ValueError(f"--task-user {user}: no such user") from None
            if entry.pw_uid == 0:
                raise ValueError(f"--task-user {user}: tasks must not run as root")
            return cls("user", user=Identity(entry.pw_uid, entry.pw_gid))
        first, last = uids or DEFAULT_UIDS
        if not 0 < first <= last < 2**31:
            raise ValueError(f"--task-uids {first}-{last}: not a range of non-root uids")
        owned = sorted(p.pw_uid for p in pwd.getpwall() if first <= p.pw_uid <= last)
        if owned:
            # an account's files would be the tasks' own
            raise ValueError(f"--task-uids {first}-{last}: uid {owned[0]} belongs to an account")
        return cls("slot-uids", (first, last))

    def take(self) -> Identity | None:
        """The identity for one task or runner; None: run as the worker itself (`self`).

        RuntimeError when every uid of the range is busy."""
        if self.mode == "user":
            return self.user
        if self.mode != "slot-uids":
            return None
        self.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        busy = _running_uids()
        for uid in range(self.uids[0], self.uids[1] + 1):
            if uid in busy or uid in self._held:
                continue
            fd = os.open(self.lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._held.add(uid)
            return Identity(uid, uid, fd)
        raise RuntimeError(f"every task uid in {self.uids[0]}-{self.uids[1]} is in use")

    def give_back(self, identity: Identity | None) -> None:
        """Free a slot uid once nothing runs as it any more."""
        if identity is not None and identity.lock is not None:
            self._held.discard(identity.uid)
            with contextlib.suppress(OSError):
                os.close(identity.lock)


def _running_uids() -> set[int]:
    """The uids of every process on this machine (a /proc entry belongs to its process's)."""
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                out.add(os.stat(f"/proc/{name}").st_uid)
    return out


def hand_over(directory: Path, identity: Identity | None) -> None:
    """Make a task's directory and everything in it its user's own (the directory 0700), so
    the task may change its inputs as it could as the worker's user. An input linked from
    the cache changes owner too: the cache verifies a lent blob before its next use anyway
    (cache.py), whoever owns it."""
    if identity is None:
        return
    if os.path.islink(directory):  # a pooled task's `work` links into a runner's root
        directory = Path(os.path.realpath(directory))
    os.lchown(directory, identity.uid, identity.gid)
    os.chmod(directory, 0o700)
    # os.walk skips what vanishes meanwhile (a runner's root may hold an old task's
    # directory being removed) and follows no symlink
    for parent, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(parent, name), identity.uid, identity.gid)


def _searchable(path: Path, identity: Identity) -> bool:
    """Whether `identity` may search `path` (a missing path: nothing to do about it)."""
    try:
        st = path.stat()
    except OSError:
        return True
    if st.st_uid == identity.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == identity.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def reach_plan(paths: Iterable[Path], can_search: Callable[[Path], bool]) -> dict[Path, list[Path]]:
    """For each outermost directory `can_search` refuses above one of `paths`, the paths
    under it to bind back over a tmpfs there."""
    plan: dict[Path, list[Path]] = {}
    for path in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        blocked = next((a for a in reversed(path.parents) if not can_search(a)), None)
        if blocked is None:
            continue
        # the first directory refused from the root: never inside another path's
        plan.setdefault(blocked, []).append(path)
    return plan


def reach_for(paths: Iterable[Path], identity: Identity) -> dict[Path, list[Path]]:
    """`reach_plan` for what `identity` can search on this machine."""
    return reach_plan(paths, lambda p: _searchable(p, identity))


def reach(plan: dict[Path, list[Path]]) -> None:
    """In a child, still root: a private mount namespace where each blocked directory is a
    tmpfs holding only its paths, bound back (from descriptors opened in the new namespace,
    before the tmpfs covers them: a bind's source must be a mount of the caller's own)."""
    if not plan:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(_CLONE_NEWNS))
    _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None))
    for blocked, under in plan.items():
        fds = [os.open(p, os.O_PATH | os.O_CLOEXEC) for p in under]
        _check(libc.mount(b"tmpfs", bytes(blocked), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0755"))
        for path, fd in zip(under, fds, strict=True):
            source = f"/proc/self/fd/{fd}"
            if os.path.isdir(source):
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(path.parent, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            _check(libc.mount(source.encode(), bytes(path), None, _MS_BIND | _MS_REC, None))
            os.close(fd)


def become(identity: Identity) -> None:
    """In a child: drop every group and become `identity` for good; no setuid program can
    raise it again (no_new_privs, which bwrap sets too)."""
    os.setgroups([])
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    no_new_privs()


def no_new_privs() -> None:
    """Set PR_SET_NO_NEW_PRIVS on the calling process (inherited by its children)."""
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))


def _check(result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
