"""The task sandbox: bubblewrap when it is installed and usable, else a weaker mode.

Under bwrap a task starts from an empty, read-only root and sees only what programs need:

    /usr, /bin, /sbin, /lib*   read-only (a top-level symlink into /usr stays a symlink)
    /etc                       only the entries in ETC_ENTRIES (names, resolver, locale, time,
                               certificates, loader): never shadow, gshadow, sudoers, ssh host
                               keys or ssl/private, and nothing added to /etc later
    /opt                       read-only, when present
    the Python and corral      read-only (`default_exposed`), wherever they live
    --sandbox-expose DIR[:rw]  read-only, or read-write with `:rw`
    /dev, /proc                fresh: a minimal read-only /dev, the /proc of its own PID
                               namespace
    /tmp, /dev/shm             private tmpfs, writable
    its task directory         read-write, at the same path (relative paths, outputs work)

Everything else (/root, /home, /var, /srv, /mnt, /media, /run, /sys, the worker's and the
coordinator's data) is absent. Where a visible tree holds something a task must not see (the
worker's work directory under /opt, a `--sandbox-hide` directory under an exposed one, a
daemon's socket), a tmpfs or /dev/null covers it. No network unless both the task
(`requires network=yes`) and the worker (`--allow-network`) want it. A user namespace is always
made (mapping the task's uid to itself, see taskuser.py), capabilities are dropped, nested user
namespaces are disabled, no_new_privs is set (bwrap does so), and when libseccomp is there the
system-call filter of seccomp.py is loaded last.

`sandbox_prefix` is the decision, a pure function from the policy and the task to an argv
prefix; `system_view` reads this machine's layout once; `probe` is the one place that runs
bwrap to see if it works here.

Rejected: binding / read-only and hiding a list of places (the previous design): whatever
the list forgot, a file added to /etc or a new data directory, was readable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ETC_ENTRIES",
    "SandboxPolicy",
    "default_exposed",
    "default_hidden",
    "default_sockets",
    "probe",
    "sandbox_prefix",
    "system_view",
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
_TOP = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# what programs read from /etc, and nothing that holds a secret: an allow-list, so a file
# added to /etc later (a token, a key) stays out. pip.conf, npmrc, wgetrc and gitconfig are
# left out on purpose: they may carry credentials.
ETC_ENTRIES = (
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "ethertypes",
    "fonts",
    "gai.conf",
    "group",
    "host.conf",
    "hostname",
    "hosts",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "locale.conf",
    "locale.gen",
    "localtime",
    "lsb-release",
    "magic",
    "magic.mime",
    "matplotlibrc",
    "mime.types",
    "mtab",
    "networks",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "perl",
    "profile",
    "protocols",
    "python3",
    "resolv.conf",
    "rpc",
    "services",
    "shells",
    "ssl/certs",
    "ssl/openssl.cnf",
    "terminfo",
    "timezone",
    "xml",
)

Mount = tuple[str, str, str]  # (bwrap option, source, destination)


@dataclass(frozen=True)
class SandboxPolicy:
    """How this worker confines tasks; `bwrap` is None in the weaker mode."""

    bwrap: str | None
    allow_network: bool = False
    hide: tuple[Path, ...] = field(default_factory=tuple)
    prlimit: str = "/usr/bin/prlimit"
    expose: tuple[Path, ...] = field(default_factory=tuple)  # read-only, even inside `hide`
    sockets: tuple[Path, ...] = field(default_factory=tuple)  # replaced by /dev/null
    system: tuple[Mount, ...] = field(default_factory=tuple)  # `system_view()`
    expose_rw: tuple[Path, ...] = field(default_factory=tuple)  # --sandbox-expose DIR:rw
    seccomp: bool = False  # load seccomp.py's filter (the launch passes its fd)

    @property
    def name(self) -> str:
        """The `sandbox` capability: bwrap or none."""
        return "bwrap" if self.bwrap else "none"

    @property
    def network(self) -> str:
        """The `network` capability: yes when a task asking for the network would get it."""
        return "yes" if self.allow_network or not self.bwrap else "no"

    def sources(self, task_dir: Path) -> list[Path]:
        """Every host path bwrap binds for a task in `task_dir` (what its user must reach)."""
        binds = [Path(src) for opt, src, _ in self.system if opt != "--symlink"]
        return [*binds, *self.expose, *self.expose_rw, task_dir]


def wants_network(requires: Mapping[str, str]) -> bool:
    """Whether a task asks for the network (`requires network=yes`)."""
    return requires.get("network") == "yes"


def _inside(path: Path, trees: Iterable[Path]) -> bool:
    return any(path == t or t in path.parents for t in trees)


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """Paths, parents before children, leaving out those inside another."""
    out: list[Path] = []
    for path in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if path != Path("/") and not _inside(path, out):
            out.append(path)
    return out


def _mounts(policy: SandboxPolicy, task_dir: Path) -> list[str]:
    """The mount options, in the order bwrap must apply them."""
    argv: list[str] = []
    for opt, src, dest in policy.system:
        argv += [opt, src, dest]
    argv += ["--dev", "/dev", "--tmpfs", "/dev/shm", "--proc", "/proc", "--tmpfs", "/tmp"]
    trees = [Path(src) for opt, src, _ in policy.system if opt != "--symlink"]
    hidden = [h for h in _outermost(policy.hide) if not _inside(h, [task_dir])]
    exposed = [(p, "--ro-bind") for p in policy.expose] + [(p, "--bind") for p in policy.expose_rw]
    exposed.sort(key=lambda e: (len(e[0].parts), str(e[0])))
    # first what no visible tree holds yet (or the private /tmp would cover)
    late = []
    for path, opt in exposed:
        if _inside(path, [task_dir]):
            continue  # the task dir is bound on its own, read-write
        if _inside(path, hidden):
            late.append((path, opt))
        elif opt == "--bind" or not _inside(path, trees) or _inside(path, [Path("/tmp")]):
            argv += [opt, str(path), str(path)]
            trees.append(path)
    # then cover what a visible tree must not show, and bind back what is exposed inside it
    for path in hidden:
        if _inside(path, trees) and not _inside(path, [Path("/tmp")]):
            argv += ["--tmpfs", str(path)]
    for path, opt in late:
        argv += [opt, str(path), str(path)]
    for sock in policy.sockets:
        if _inside(sock, trees) and not _inside(sock, hidden):
            argv += ["--ro-bind", "/dev/null", str(sock)]
    argv += ["--bind", str(task_dir), str(task_dir), "--chdir", str(task_dir)]
    return argv


def sandbox_prefix(
    policy: SandboxPolicy,
    task_dir: Path,
    network: bool,
    nproc: int | None = None,
    seccomp_fd: int | None = None,
) -> list[str]:
    """The argv that runs a command confined to `task_dir`; empty in the weaker mode.

    `nproc` sets RLIMIT_NPROC inside the sandbox's own user namespace, where it counts only
    this task's processes (set outside, it would count every process of the worker's user).
    `seccomp_fd` is a descriptor holding the system-call filter, inherited by bwrap.
    """
    if not policy.bwrap:
        return []
    argv = [policy.bwrap, *_mounts(policy, task_dir)]
    # the root tmpfs and /dev: nothing new there (/dev/shm, a mount of its own, stays)
    argv += ["--remount-ro", "/", "--remount-ro", "/dev"]
    argv += ["--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-ipc"]
    argv += ["--unshare-uts", "--unshare-cgroup-try"]
    if not (network and policy.allow_network):
        argv.append("--unshare-net")
    argv += ["--cap-drop", "ALL", "--die-with-parent", "--new-session"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    argv.append("--")
    if nproc is not None:
        argv += [policy.prlimit, f"--nproc={nproc}:{nproc}", "--"]
    return argv


def system_view(root: Path = Path("/")) -> tuple[Mount, ...]:
    """This machine's system directories as bwrap mounts: /usr, the top-level /bin, /lib*
    and /sbin (symlinks as symlinks), /opt when present, and /etc's allowed entries."""
    out: list[Mount] = []
    if (root / "usr").is_dir():
        out.append(("--ro-bind", str(root / "usr"), "/usr"))
    for name in _TOP:
        path = root / name
        if path.is_symlink():
            out.append(("--symlink", os.readlink(path), f"/{name}"))
        elif path.is_dir():
            out.append(("--ro-bind", str(path), f"/{name}"))
    if (root / "opt").is_dir():
        out.append(("--ro-bind", str(root / "opt"), "/opt"))
    for name in ETC_ENTRIES:
        path = root / "etc" / name
        if not path.exists():  # (a dangling symlink would stop bwrap)
            continue
        target = path.resolve()
        if path.is_symlink() and _inside(target, [root / "usr", root / "proc"]):
            # as a link, /etc/mtab shows the task's own mounts, not the worker's
            out.append(("--symlink", os.readlink(path), f"/etc/{name}"))
        else:
            out.append(("--ro-bind-try", str(path), f"/etc/{name}"))
    return tuple(out)


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


def probe(
    work_dir: Path,
    system: tuple[Mount, ...] | None = None,
    preexec: Callable[[], None] | None = None,
) -> str | None:
    """The bwrap binary when it is installed and can build our sandbox for a task in
    `work_dir` here (started with `preexec`, as a task would be), else None."""
    bwrap, prlimit = shutil.which("bwrap"), shutil.which("prlimit")
    if bwrap is None or prlimit is None:
        return None
    work_dir.mkdir(parents=True, exist_ok=True)
    view = system_view() if system is None else system
    policy = SandboxPolicy(bwrap, prlimit=prlimit, system=view, expose=default_exposed())
    argv = sandbox_prefix(policy, work_dir, network=False, nproc=64) + ["true"]
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=15, check=False, preexec_fn=preexec
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bwrap if done.returncode == 0 else None
