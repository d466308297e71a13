"""The system-call filter bwrap applies to a task (`bwrap --seccomp FD`).

The filter allows every system call except those no batch task needs and that reach into the
kernel's riskier corners or out of the sandbox: other processes' memory, mounts and new
namespaces, kernel keyrings, eBPF, perf, modules, kexec, the clock, swap, raw I/O ports, and the
like. A denied call fails with EPERM, as under Docker's default seccomp profile, the reference
for the list, so a program that probes (say, for `unshare`) falls back instead of dying. Some
calls are denied only with certain arguments:

    clone        with any CLONE_NEW* namespace flag (EPERM); other clones (fork, threads) pass
    clone3       ENOSYS always: its flags sit in a struct a filter cannot read, and glibc falls
                 back to clone on ENOSYS (Docker does the same)
    ioctl        TIOCSTI and TIOCLINUX, which push input into a terminal the task shares
    personality  all but the values Docker allows (0, UNAME26, PER_LINUX32, both, and the
                 0xffffffff query), so a task cannot turn off address-space randomisation

The same rules cover the native ABI and, on x86_64, the i386 and x32 ABIs (on aarch64, arm), so a
32-bit program (or `int 0x80` from a 64-bit one) meets the same filter; a call from an ABI the
filter does not list kills the thread (libseccomp's default).

bwrap loads the filter as its very last step, after it has built the namespaces and mounts, so
denying `unshare` and `mount` does not stop bwrap itself.

How a caller passes it: `seccomp_fd()` returns a fresh fd per launch (None when libseccomp is
missing), which bwrap inherits and reads to its end:

    fd = seccomp_fd()
    argv = [bwrap, ..., "--seccomp", str(fd), "--", *command]
    try:
        proc = subprocess.Popen(argv, pass_fds=(fd,))
    finally:
        os.close(fd)  # bwrap has its own copy now

bwrap reads its copy to the end and closes it before the task starts, so the task never holds it.
`available()` says whether this worker filters its tasks (its `seccomp` capability), and
`unavailable_reason()` why not.

Built with libseccomp through `pyseccomp`, a ctypes binding to the system's libseccomp.so.2:
libseccomp is maintained, resolves syscall names per ABI and writes the BPF bwrap reads. The
filter is built once per worker (`filter_bytes`, cached) and handed out as a memfd per launch.

Rejected:
- KILL as the deny action: a program that merely probes a call would die with SIGSYS, and the
  task would look like a crash rather than a refusal.
- Writing the BPF by hand: per-ABI syscall numbers, the x32 bit and 64-bit argument compares are
  exactly what libseccomp already gets right.
- Debian's python3-seccomp: it binds only the system interpreter, not a venv's.
- One memfd dup'ed per launch: dups share a file offset, so two launches starting at once
  would each read half. A pipe per launch: bwrap's EOF then waits on every copy of the write
  end being closed, including one a concurrent fork in another thread may hold.
- Denying adjtimex and clock_adjtime (Docker allows adjtimex): with mode 0 they are how
  ntp_gettime reads the clock's state; setting the clock needs CAP_SYS_TIME, which a task never
  holds, and the pure setters (settimeofday, clock_settime) are denied anyway.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = [
    "DENIED",
    "SeccompUnavailable",
    "available",
    "build_filter",
    "filter_bytes",
    "seccomp_fd",
    "unavailable_reason",
]

DENIED: tuple[str, ...] = (
    # another process's memory: a task must not read or steer its neighbours
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    # mounts and the root directory: the sandbox's view of the filesystem is fixed by bwrap
    "mount",
    "umount2",
    "pivot_root",
    "chroot",  # fails anyway without CAP_SYS_CHROOT, which no task holds; denied as Docker does
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    # new namespaces: the way to get capabilities back (clone's flags are filtered separately)
    "unshare",
    "setns",
    # kernel keyrings are not namespaced: a task could read or plant the host's keys
    "keyctl",
    "add_key",
    "request_key",
    # eBPF, perf, userfaultfd, io_uring: large kernel attack surfaces, unused by batch work
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # replacing or extending the running kernel
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    # the machine itself: power, swap, I/O ports, accounting, quotas, the kernel log, the tty
    "reboot",
    "swapon",
    "swapoff",
    "iopl",
    "ioperm",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "vhangup",
    # setting the clock or the host's names
    "settimeofday",
    "clock_settime",
    "sethostname",
    "setdomainname",
    # files by handle (bypasses path checks: the "shocker" escape) and obsolete interfaces
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
    "uselib",
    "nfsservctl",
)

# clone's namespace flags; any of them makes clone fail with EPERM
_NAMESPACE_FLAGS: tuple[int, ...] = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

# personality values Docker allows: PER_LINUX, UNAME26, PER_LINUX32, both, and the query
_PERSONALITY_OK_BITS = 0x0020008
_PERSONALITY_QUERY = 0xFFFFFFFF

_MAX_BPF = 4096 * 8  # the kernel takes at most 4096 instructions of 8 bytes


class SeccompUnavailable(RuntimeError):
    """libseccomp (or pyseccomp) cannot be loaded here, or cannot build the filter."""


def _library() -> Any:
    """The pyseccomp module, or SeccompUnavailable saying why it cannot be loaded."""
    try:
        import pyseccomp
    except ImportError as exc:
        raise SeccompUnavailable(f"pyseccomp is not installed ({exc})") from exc
    except (OSError, RuntimeError, AttributeError) as exc:  # no or too old libseccomp.so.2
        raise SeccompUnavailable(f"libseccomp cannot be loaded ({exc})") from exc
    return pyseccomp


def _compat_arches(sc: Any) -> tuple[int, ...]:
    """The other ABIs this machine's kernel may run, which the filter must cover too."""
    return {
        sc.Arch.X86_64: (sc.Arch.X86, sc.Arch.X32),
        sc.Arch.AARCH64: (sc.Arch.ARM,),
        sc.Arch.S390X: (sc.Arch.S390,),
    }.get(sc.system_arch(), ())


def _personality_denials() -> Iterator[tuple[int, int]]:
    """(mask, value) pairs such that a persona is denied iff `persona & mask == value` for one.

    libseccomp takes one comparison per argument in a rule and refuses ALLOW rules under an
    ALLOW default, so "not one of these five values" is spelt as bit tests on the low 32 bits
    (the kernel reads the persona as an unsigned int): with bit 0 clear, any bit outside
    UNAME26 | PER_LINUX32 is denied; with bit 0 set, anything but all 32 bits (the query) is.
    """
    for bit in (1 << i for i in range(1, 32)):
        if not bit & _PERSONALITY_OK_BITS:
            yield bit | 1, bit  # this bit set, bit 0 clear
        yield bit | 1, 1  # bit 0 set, this bit clear: not the query


def _tty_injection_ioctls() -> tuple[int, ...]:
    """TIOCSTI and TIOCLINUX, read from termios because their numbers differ by arch."""
    import termios

    return tuple(
        getattr(termios, name) for name in ("TIOCSTI", "TIOCLINUX") if hasattr(termios, name)
    )


def build_filter() -> bytes:
    """The filter as the raw BPF program bwrap's `--seccomp` reads; SeccompUnavailable if not."""
    sc = _library()
    try:
        flt = sc.SyscallFilter(sc.ALLOW)
        for arch in _compat_arches(sc):
            try:
                flt.add_arch(arch)
            except OSError:  # an ABI this libseccomp does not know
                continue
        eperm = sc.ERRNO(errno.EPERM)
        for name in DENIED:
            if sc.resolve_syscall(sc.Arch.NATIVE, name) >= 0:  # older libseccomps lack some
                flt.add_rule(eperm, name)
        flags_arg = 1 if sc.system_arch() in (sc.Arch.S390, sc.Arch.S390X) else 0
        for flag in _NAMESPACE_FLAGS:
            flt.add_rule(eperm, "clone", sc.Arg(flags_arg, sc.MASKED_EQ, flag, flag))
        flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        for cmd in _tty_injection_ioctls():
            # the kernel reads cmd as 32 bits: compare only those, so high bits cannot hide it
            flt.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, cmd))
        for mask, value in _personality_denials():
            flt.add_rule(eperm, "personality", sc.Arg(0, sc.MASKED_EQ, mask, value))
        with tempfile.TemporaryFile() as out:
            flt.export_bpf(out)
            out.seek(0)
            program: bytes = out.read()
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp could not build the filter ({exc})") from exc
    if not program or len(program) % 8 or len(program) > _MAX_BPF:
        raise SeccompUnavailable(f"libseccomp wrote {len(program)} bytes, not a BPF program")
    return program


@functools.lru_cache(maxsize=1)
def _built() -> tuple[bytes | None, str | None]:
    try:
        return build_filter(), None
    except SeccompUnavailable as exc:
        return None, str(exc)


def filter_bytes() -> bytes | None:
    """The filter, built once per process; None when libseccomp is unavailable."""
    return _built()[0]


def available() -> bool:
    """Whether this worker can filter its tasks' system calls."""
    return filter_bytes() is not None


def unavailable_reason() -> str | None:
    """Why the filter is unavailable, or None when it is available."""
    return _built()[1]


def seccomp_fd() -> int | None:
    """A new fd holding the filter, positioned at 0, for one bwrap launch; None if unavailable.

    A memfd of its own per launch, so concurrent launches never share a file offset. The fd is
    close-on-exec: `Popen(pass_fds=(fd,))` hands it to bwrap, and the caller closes it after.
    """
    program = filter_bytes()
    if program is None:
        return None
    fd = os.memfd_create("corral-seccomp", os.MFD_CLOEXEC)
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
