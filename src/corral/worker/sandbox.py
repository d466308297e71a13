"""The task sandbox: bubblewrap when it is installed and usable, else a weaker mode.

Under bwrap a task sees the system read-only, its own directory (bound at the same path, so
relative paths and outputs work) and a private /tmp writable, a fresh /proc of its own PID
namespace, no network unless both the task (`requires network=yes`) and the worker
(`--allow-network`) want it, and none of the worker's files: tmpfs is mounted over the
worker's work directory (cache and other tasks), the home directory and XDG directories
(configs and tokens) and anything passed as `--sandbox-hide`. The Python installation, corral
itself and `--sandbox-expose` directories are bound back read-only when they live under a
hidden directory (a pyenv or venv in the home directory). Sockets of daemons that would obey a
task (docker, containerd, podman, the system D-Bus) are covered with /dev/null. Capabilities
are dropped and a user namespace is always created, so the task has no privileges even when the
worker is root.

`sandbox_prefix` is the decision, a pure function from the policy and the task to an argv
prefix; `probe` is the one place that runs bwrap to see if it works here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "SandboxPolicy",
    "default_exposed",
    "default_hidden",
    "default_sockets",
    "probe",
    "sandbox_prefix",
    "wants_network",
]

# daemons a task could drive through a unix socket, read-only mount or not
_SOCKETS = (
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/run/dbus/system_bus_socket",
    "/var/run/dbus/system_bus_socket",
)
_XDG = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR")


@dataclass(frozen=True)
class SandboxPolicy:
    """How this worker confines tasks; `bwrap` is None in the weaker mode."""

    bwrap: str | None
    allow_network: bool = False
    hide: tuple[Path, ...] = field(default_factory=tuple)
    prlimit: str = "/usr/bin/prlimit"
    expose: tuple[Path, ...] = field(default_factory=tuple)  # read-only, even inside `hide`
    sockets: tuple[Path, ...] = field(default_factory=tuple)  # replaced by /dev/null

    @property
    def name(self) -> str:
        """The `sandbox` capability: bwrap or none."""
        return "bwrap" if self.bwrap else "none"

    @property
    def network(self) -> str:
        """The `network` capability: yes when a task asking for the network would get it."""
        return "yes" if self.allow_network or not self.bwrap else "no"


def wants_network(requires: Mapping[str, str]) -> bool:
    """Whether a task asks for the network (`requires network=yes`)."""
    return requires.get("network") == "yes"


def _outermost(paths: Iterable[Path], keep: Path) -> list[Path]:
    """Paths to hide, parents before children; never `/`, the task dir or anything inside it."""
    out: list[Path] = []
    for path in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if path == Path("/") or path == keep or keep in path.parents:
            continue
        if any(parent in out for parent in path.parents):
            continue  # already under a tmpfs
        out.append(path)
    return out


def _exposed(paths: Iterable[Path], hidden: list[Path], task_dir: Path) -> list[Path]:
    """Paths to bind back read-only: under a hidden dir, holding neither one nor the task."""
    out: list[Path] = []
    for path in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        under = any(h in path.parents for h in hidden)
        covers = any(path == h or path in h.parents for h in [*hidden, task_dir])
        if under and not covers and not any(o in path.parents for o in out):
            out.append(path)
    return out


def sandbox_prefix(
    policy: SandboxPolicy, task_dir: Path, network: bool, nproc: int | None = None
) -> list[str]:
    """The argv that runs a command confined to `task_dir`; empty in the weaker mode.

    `nproc` sets RLIMIT_NPROC inside the sandbox's own user namespace, where it counts only
    this task's processes (set outside, it would count every process of the worker's user).
    """
    if not policy.bwrap:
        return []
    argv = [policy.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    argv += ["--tmpfs", "/tmp"]
    hidden = _outermost(policy.hide, task_dir)
    for path in hidden:
        argv += ["--tmpfs", str(path)]
    # the private /tmp hides too: a Python or checkout living under /tmp is bound back
    for path in _exposed(policy.expose, [Path("/tmp"), *hidden], task_dir):
        argv += ["--ro-bind", str(path), str(path)]
    for path in policy.sockets:
        if not any(h in path.parents for h in hidden):
            argv += ["--ro-bind", "/dev/null", str(path)]
    argv += ["--bind", str(task_dir), str(task_dir), "--chdir", str(task_dir)]
    argv += ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup-try"]
    if not (network and policy.allow_network):
        argv.append("--unshare-net")
    argv += ["--cap-drop", "ALL", "--die-with-parent", "--new-session"]
    argv.append("--")
    if nproc is not None:
        argv += [policy.prlimit, f"--nproc={nproc}:{nproc}", "--"]
    return argv


def default_hidden(work_dir: Path, extra: Iterable[Path] = ()) -> tuple[Path, ...]:
    """What a task must not see: the worker's work dir, home, XDG dirs, and `extra`."""
    candidates = [work_dir, Path.home(), Path("/run/user"), *extra]
    candidates += [Path(os.environ[name]) for name in _XDG if os.environ.get(name)]
    out = []
    for path in candidates:
        resolved = path.resolve()
        if resolved.is_dir() and resolved != Path("/"):
            out.append(resolved)
    return tuple(dict.fromkeys(out))


def default_sockets() -> tuple[Path, ...]:
    """The daemon sockets on this machine that tasks must not reach."""
    return tuple(Path(p) for p in _SOCKETS if Path(p).exists() and not Path(p).is_symlink())


def default_exposed(extra: Iterable[Path] = ()) -> tuple[Path, ...]:
    """What tasks need even from hidden places: this Python, corral's code, and `extra`."""
    code = Path(__file__).resolve().parents[2]  # the directory holding the corral package
    candidates = [Path(sys.base_prefix), Path(sys.prefix), code, *extra]
    return tuple(dict.fromkeys(p.resolve() for p in candidates if p.is_dir()))


def probe(work_dir: Path) -> str | None:
    """The bwrap binary when it is installed and can build our sandbox here, else None."""
    bwrap, prlimit = shutil.which("bwrap"), shutil.which("prlimit")
    if bwrap is None or prlimit is None:
        return None
    work_dir.mkdir(parents=True, exist_ok=True)
    policy = SandboxPolicy(bwrap, hide=(work_dir,), prlimit=prlimit)
    argv = sandbox_prefix(policy, work_dir, network=False, nproc=64) + ["true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return bwrap if done.returncode == 0 else None
