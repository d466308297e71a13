"""The seccomp filter: it builds, names real syscalls, and really denies under bwrap.

The real tests run probes in `bwrap --seccomp FD` twice, with and without the filter: a probe
counts only when the two runs differ (EPERM with the filter, another errno or success without),
so an EPERM that a missing capability would give anyway proves nothing here.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.worker import seccomp

IN_CI = bool(os.environ.get("CI"))
EPERM, ENOSYS = 1, 38

# (label, syscall, args, errno under the filter); a str arg is a C string
PROBES: list[tuple[str, str, tuple[int | str, ...], int]] = [
    ("clone user namespace", "clone", (0x10000000,), EPERM),
    ("clone user+net namespaces", "clone", (0x50000000,), EPERM),
    ("clone3", "clone3", (0, 0), ENOSYS),
    ("ptrace peek", "ptrace", (2, 999999, 0, 0), EPERM),
    ("process_vm_readv", "process_vm_readv", (999999, 0, 0, 0, 0, 0), EPERM),
    ("mount", "mount", ("none", "/nonexistent-corral", "tmpfs", 0, 0), EPERM),
    ("umount2", "umount2", ("/", 0xFFFF), EPERM),
    ("chroot", "chroot", ("/nonexistent-corral",), EPERM),
    ("setns", "setns", (-1, 0), EPERM),
    ("keyctl session keyring", "keyctl", (0, -3, 0), EPERM),
    ("add_key", "add_key", (0, 0, 0, 0, 0), EPERM),
    ("perf_event_open", "perf_event_open", (0, 0, -1, -1, 0), EPERM),
    ("personality no-ASLR", "personality", (0x0040000,), EPERM),
    ("ioctl TIOCSTI", "ioctl", (0, 0x5412, "x"), EPERM),
    ("ioctl TIOCSTI, high bits set", "ioctl", (0, (1 << 32) | 0x5412, "x"), EPERM),
    ("settimeofday, bad pointer", "settimeofday", (1, 0), EPERM),
    ("clock_settime", "clock_settime", (9999, 0), EPERM),
    ("name_to_handle_at", "name_to_handle_at", (-100, "/", 0, 0, 0), EPERM),
    # last: without the filter, the rest would run in the new namespace
    ("unshare user namespace", "unshare", (0x10000000,), EPERM),
]

# allowed with and without the filter
ALLOWED: list[tuple[str, str, tuple[int | str, ...]]] = [
    ("personality query", "personality", (0xFFFFFFFF,)),
    ("personality linux32", "personality", (0x0020000,)),
    ("personality default", "personality", (0,)),
    ("plain clone (fork)", "clone", (0,)),
]

# Runs in the sandbox: calls each probe by number, prints {label: errno or 0} as JSON.
PROBE_SCRIPT = textwrap.dedent(
    """
    import ctypes, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    SIGCHLD = 17
    out = {}
    for label, nr, is_clone, args in json.loads(sys.argv[1]):
        if is_clone:  # raw clone: the child returns here with 0 and must leave at once
            args = [args[0] | SIGCHLD, 0, 0, 0, 0]
        cargs = [ctypes.c_char_p(a.encode()) if isinstance(a, str) else ctypes.c_long(a)
                 for a in args]
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(nr), *cargs)
        if is_clone and r == 0:
            os._exit(0)
        if is_clone and r > 0:
            os.waitpid(r, 0)
        out[label] = ctypes.get_errno() if r == -1 else 0
    print(json.dumps(out))
    """
)

ORDINARY_SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys, threading
    assert subprocess.run(["/bin/true"]).returncode == 0
    out = subprocess.run(["sh", "-c", "echo ok"], capture_output=True, text=True).stdout
    assert out == "ok\\n", out
    box = []
    t = threading.Thread(target=box.append, args=(1,)); t.start(); t.join()
    assert box == [1]
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
    with open(sys.executable, "rb") as f:
        assert f.read(4) == b"\\x7fELF"
    links = []
    for n in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{n}"))
        except OSError:  # listdir's own fd, closed by now
            pass
    assert not any("corral-seccomp" in link for link in links), links  # bwrap closed it
    print("fine")
    """
)


# x86_64 code calling unshare(CLONE_NEWUSER) through the i386 ABI (int 0x80, syscall 310),
# which seccomp sees as another architecture; prints the raw result (-errno or 0)
INT80_SCRIPT = textwrap.dedent(
    """
    import ctypes, mmap
    code = bytes.fromhex(
        "53"  # push rbx (callee-saved)
        "b836010000"  # mov eax, 310
        "bb00000010"  # mov ebx, CLONE_NEWUSER
        "cd80"  # int 0x80
        "5b"  # pop rbx
        "c3"  # ret
    )
    prot = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=prot)
    page.write(code)
    call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    print(call())
    """
)


def _missing(why: str) -> None:
    if IN_CI:
        pytest.fail(f"{why}; CI must have it")
    pytest.skip(why)


@pytest.fixture(scope="module")
def lib() -> Any:
    """pyseccomp, when this machine can build the filter."""
    if not seccomp.available():
        _missing(f"no seccomp filter here: {seccomp.unavailable_reason()}")
    import pyseccomp

    return pyseccomp


@pytest.fixture(scope="module")
def bwrap(lib: Any) -> str:
    path = shutil.which("bwrap")
    if path is None:
        _missing("bubblewrap (bwrap) is not installed")
    assert path is not None
    return path


def run_in_bwrap(
    bwrap: str, argv: list[str], filtered: bool, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """argv in bwrap with user and pid namespaces, under the filter when `filtered`."""
    fd = seccomp.seccomp_fd() if filtered else None
    cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    cmd += ["--unshare-user", "--unshare-pid", *extra]
    if fd is not None:
        cmd += ["--seccomp", str(fd)]
    try:
        return subprocess.run(
            [*cmd, "--", *argv],
            pass_fds=() if fd is None else (fd,),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        if fd is not None:
            os.close(fd)


def probe_all(
    lib: Any, bwrap: str, filtered: bool, probes: list[tuple[str, str, tuple[Any, ...]]]
) -> dict[str, int]:
    spec = [
        (label, lib.resolve_syscall(lib.Arch.NATIVE, name), name == "clone", list(args))
        for label, name, args in probes
    ]
    done = run_in_bwrap(bwrap, [sys.executable, "-c", PROBE_SCRIPT, json.dumps(spec)], filtered)
    assert done.returncode == 0, done.stderr
    result: dict[str, int] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def probed(lib: Any, bwrap: str) -> dict[bool, dict[str, int]]:
    """Each probe's errno, with the filter (True) and without (False)."""
    probes = ALLOWED + [(label, name, args) for label, name, args, _ in PROBES]
    return {f: probe_all(lib, bwrap, f, probes) for f in (True, False)}


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    seccomp._built.cache_clear()
    yield
    seccomp._built.cache_clear()


# --- the filter itself ---------------------------------------------------------------------


def test_filter_builds_as_bpf(lib: Any) -> None:
    program = seccomp.build_filter()
    assert program and len(program) % 8 == 0 and len(program) <= 4096 * 8
    assert seccomp.filter_bytes() is seccomp.filter_bytes()  # built once
    assert seccomp.available() and seccomp.unavailable_reason() is None


def test_denied_names_are_real_syscalls_here(lib: Any) -> None:
    assert len(set(seccomp.DENIED)) == len(seccomp.DENIED)
    unknown = [n for n in seccomp.DENIED if lib.resolve_syscall(lib.Arch.NATIVE, n) < 0]
    assert unknown == []
    for name in ("clone", "clone3", "ioctl", "personality"):
        assert lib.resolve_syscall(lib.Arch.NATIVE, name) >= 0


def test_compat_abis_are_covered(lib: Any) -> None:
    if lib.system_arch() != lib.Arch.X86_64:
        pytest.skip("the compat ABIs checked here are x86's")
    flt = lib.SyscallFilter(lib.ALLOW)
    assert seccomp._compat_arches(lib) == (lib.Arch.X86, lib.Arch.X32)
    for arch in seccomp._compat_arches(lib):
        flt.add_arch(arch)  # libseccomp knows them, so build_filter added them


PERSONALITY_OK = {0, 0x0000008, 0x0020000, 0x0020008, 0xFFFFFFFF}


def personality_denied(persona: int) -> bool:
    return any(persona & m == v for m, v in seccomp._personality_denials())


@given(st.integers(0, 2**32 - 1) | st.sampled_from(sorted(PERSONALITY_OK)))
def test_personality_denied_exactly_outside_dockers_values(persona: int) -> None:
    assert personality_denied(persona) == (persona not in PERSONALITY_OK)


def test_personality_single_flags_denied() -> None:
    for bit in range(32):
        assert personality_denied(1 << bit) == (1 << bit not in PERSONALITY_OK)
    assert personality_denied(0xFFFFFFFE) and personality_denied(0x7FFFFFFF)


# --- handing it to bwrap ----------------------------------------------------------------------


def test_seccomp_fd_is_fresh_per_launch(lib: Any) -> None:
    a, b = seccomp.seccomp_fd(), seccomp.seccomp_fd()
    assert a is not None and b is not None
    try:
        assert a != b
        assert not os.get_inheritable(a)  # only pass_fds hands it on
        assert os.read(a, 1 << 16) == seccomp.filter_bytes()
        assert os.read(b, 1 << 16) == seccomp.filter_bytes()  # a's read moved only a
    finally:
        os.close(a)
        os.close(b)


def test_unavailable_without_pyseccomp(monkeypatch: pytest.MonkeyPatch, fresh_cache: None) -> None:
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # import fails
    assert not seccomp.available()
    assert "pyseccomp is not installed" in (seccomp.unavailable_reason() or "")
    assert seccomp.filter_bytes() is None and seccomp.seccomp_fd() is None
    with pytest.raises(seccomp.SeccompUnavailable):
        seccomp.build_filter()


def test_unavailable_without_libseccomp(monkeypatch: pytest.MonkeyPatch, fresh_cache: None) -> None:
    monkeypatch.delitem(sys.modules, "pyseccomp", raising=False)  # import it anew
    real = ctypes.util.find_library
    monkeypatch.setattr(ctypes.util, "find_library", lambda n: None if n == "seccomp" else real(n))
    assert not seccomp.available()
    assert "libseccomp cannot be loaded" in (seccomp.unavailable_reason() or "")
    assert seccomp.seccomp_fd() is None


# --- the real thing: bwrap with the filter --------------------------------------------------


@pytest.mark.parametrize(("label", "name", "args", "want"), PROBES, ids=[p[0] for p in PROBES])
def test_denied_under_bwrap(
    probed: dict[bool, dict[str, int]], label: str, name: str, args: tuple[Any, ...], want: int
) -> None:
    assert probed[True][label] == want, f"{label} with the filter"
    assert probed[False][label] not in (want, EPERM), f"{label} without the filter: same errno"


@pytest.mark.parametrize("label", [a[0] for a in ALLOWED])
def test_allowed_under_bwrap(probed: dict[bool, dict[str, int]], label: str) -> None:
    assert probed[True][label] == 0 and probed[False][label] == 0


def test_every_denied_syscall_fails_with_eperm(lib: Any, bwrap: str) -> None:
    # garbage arguments (-1): without the filter each would fail harmlessly with another errno
    probes = [(name, name, (-1,) * 6) for name in seccomp.DENIED]
    got = probe_all(lib, bwrap, True, probes)
    assert {n: e for n, e in got.items() if e != EPERM} == {}


def test_32_bit_abi_is_filtered_too(lib: Any, bwrap: str) -> None:
    if lib.system_arch() != lib.Arch.X86_64:
        pytest.skip("the i386 ABI is x86_64's")
    argv = [sys.executable, "-c", INT80_SCRIPT]
    control = run_in_bwrap(bwrap, argv, filtered=False)
    if control.returncode != 0:
        pytest.skip(f"this kernel runs no i386 system calls ({control.returncode})")
    assert control.stdout == "0\n"  # the i386 unshare works without the filter
    done = run_in_bwrap(bwrap, argv, filtered=True)
    assert (done.returncode, done.stdout) == (0, f"{-EPERM}\n")


@pytest.mark.parametrize(
    "extra",
    [(), ("--unshare-all", "--new-session", "--die-with-parent", "--cap-drop", "ALL")],
    ids=["user+pid", "all namespaces"],
)
def test_ordinary_programs_work_under_the_filter(bwrap: str, extra: tuple[str, ...]) -> None:
    done = run_in_bwrap(bwrap, [sys.executable, "-c", ORDINARY_SCRIPT], True, extra)
    assert (done.returncode, done.stdout, done.stderr) == (0, "fine\n", "")
