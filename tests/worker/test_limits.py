"""Task limits: which rlimits are set, which cgroup files are written and read, and which
limit a task's end points to.

The cgroup v2 path is tested against a fake directory tree only (the files a kernel would
show, written by the test); the v1 tests at the end make real cgroups, where the machine has
writable v1 hierarchies (root on a hybrid or v1 host), and skip elsewhere.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from corral.protocol import LIMIT_KEYS, TaskSpec, task_problems
from corral.worker.limits import (
    Cgroups,
    TaskCgroup,
    Usage,
    cgroup_settings,
    find_cgroups,
    limit_hit,
    locate,
    make_preexec,
    read_usage,
    rlimits,
)

MB = 1024 * 1024


def as_dict(pairs: list[tuple[int, int, int]]) -> dict[int, tuple[int, int]]:
    return {res: (soft, hard) for res, soft, hard in pairs}


def test_rlimits_for_each_limit() -> None:
    got = as_dict(
        rlimits({"cpu_time": 2.5, "memory": 256 * MB, "file_size": 10, "wall_time": 9}, True)
    )
    assert got[resource.RLIMIT_CPU] == (3, 4)  # SIGXCPU at 3 s, SIGKILL a second later
    assert got[resource.RLIMIT_AS] == (256 * MB, 256 * MB)
    assert got[resource.RLIMIT_FSIZE] == (10, 10)
    assert got[resource.RLIMIT_CORE] == (0, 0)  # no core files among the outputs
    assert len(got) == 4  # wall_time is the executor's business


def test_no_address_space_limit_when_a_cgroup_limits_memory() -> None:
    got = as_dict(rlimits({"memory": 256 * MB, "cpu_time": 1}, False, memory=False))
    assert resource.RLIMIT_AS not in got
    assert resource.RLIMIT_CPU in got  # still the per-process killer


def test_nproc_only_when_asked_to_set_it_outside_the_sandbox() -> None:
    assert as_dict(rlimits({"processes": 5}, nproc=True))[resource.RLIMIT_NPROC] == (5, 5)
    assert resource.RLIMIT_NPROC not in as_dict(rlimits({"processes": 5}, nproc=False))
    assert as_dict(rlimits({}, nproc=True)) == {resource.RLIMIT_CORE: (0, 0)}


def test_preexec_really_limits_a_child(tmp_path: Path) -> None:
    # a child with RLIMIT_FSIZE of 100 bytes cannot write a bigger file
    out = tmp_path / "big"
    code = f"f = open({str(out)!r}, 'wb', buffering=0)\nfor _ in range(10): f.write(b'x' * 100)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=make_preexec(rlimits({"file_size": 100}, False)),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert b"File too large" in done.stderr
    assert out.stat().st_size <= 100


def test_signals_name_the_limit() -> None:
    limits = {"cpu_time": 1.0, "file_size": 10.0}
    assert limit_hit(limits, -signal.SIGXCPU, b"") == "cpu_time"
    assert limit_hit(limits, 128 + signal.SIGXCPU, b"") == "cpu_time"  # via sh or bwrap
    assert limit_hit(limits, -signal.SIGXFSZ, b"") == "file_size"
    assert limit_hit({}, -signal.SIGXCPU, b"") is None  # no such limit was set


def test_messages_name_the_limit() -> None:
    assert limit_hit({"memory": 1.0}, 1, b"...\nMemoryError\n") == "memory"
    assert limit_hit({"file_size": 1.0}, 1, b"OSError: [Errno 27] File too large") == "file_size"
    tail = b"BlockingIOError: [Errno 11] Resource temporarily unavailable"
    assert limit_hit({"processes": 3.0}, 1, tail) == "processes"
    assert limit_hit({"memory": 1.0}, 1, tail) is None


def test_success_is_never_a_limit_and_the_pids_counter_wins() -> None:
    refused = Usage(pids_refused=4)
    assert limit_hit({"memory": 1.0}, 0, b"MemoryError") is None
    assert limit_hit({"memory": 1.0}, 0, b"", Usage(oom_kills=1)) is None  # it coped
    assert limit_hit({"processes": 3.0}, 0, b"", refused) == "processes"
    assert limit_hit({"processes": 3.0}, 1, b"") is None
    assert limit_hit({}, 1, b"", refused) is None  # no such limit was set


def test_the_cgroup_oom_counter_names_memory_whatever_the_exit() -> None:
    limits = {"memory": 64.0 * MB}
    # a child was OOM-killed and its parent exited 1: the counter says why, not the code
    assert limit_hit(limits, 1, b"", Usage(oom_kills=1)) == "memory"
    assert limit_hit(limits, -9, b"", Usage(oom_kills=1)) == "memory"
    assert limit_hit(limits, -9, b"", Usage(oom_kills=0, memory_failcnt=5)) is None  # reclaimed
    # a kernel without the oom_kill counter: the limit was reached and SIGKILL followed
    assert limit_hit(limits, -9, b"", Usage(oom_kills=None, memory_failcnt=5)) == "memory"
    assert limit_hit(limits, 1, b"", Usage(oom_kills=None, memory_failcnt=5)) is None


def test_the_whole_trees_cpu_time_names_cpu_time_on_a_kill() -> None:
    limits = {"cpu_time": 2.0}
    assert limit_hit(limits, -9, b"", Usage(cpu_seconds=2.4)) == "cpu_time"
    assert limit_hit(limits, 137, b"", Usage(cpu_seconds=2.0)) == "cpu_time"
    assert limit_hit(limits, -9, b"", Usage(cpu_seconds=0.5)) is None
    assert limit_hit(limits, 1, b"", Usage(cpu_seconds=3.0)) is None  # it ended on its own


def test_cgroup_settings_v1_and_v2() -> None:
    limits = {"memory": 100.5 * MB, "processes": 10, "cpu_time": 3, "wall_time": 9}
    assert cgroup_settings(1, limits, extra_pids=2) == {
        "memory": {"memory.limit_in_bytes": str(100 * MB + MB // 2)},
        "pids": {"pids.max": "12"},
    }
    v2 = cgroup_settings(2, limits)
    assert v2["memory"] == {
        "memory.max": str(100 * MB + MB // 2),
        "memory.swap.max": "0",
        "memory.oom.group": "1",
    }
    assert v2["pids"] == {"pids.max": "10"}
    assert cgroup_settings(2, {"wall_time": 5}) == {}  # an accounting-only cgroup


def test_read_usage_v1() -> None:
    texts = {
        "memory.max_usage_in_bytes": "52428800\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "memory.failcnt": "133\n",
        "pids.events": "max 0\n",
        "cpuacct.usage": "1500000000\n",
    }
    assert read_usage(1, texts) == Usage(
        peak_memory=50 * MB, cpu_seconds=1.5, oom_kills=2, memory_failcnt=133, pids_refused=0
    )
    old_kernel = {k: v for k, v in texts.items() if k != "memory.oom_control"}
    old_kernel["memory.oom_control"] = "oom_kill_disable 0\nunder_oom 0\n"
    assert read_usage(1, old_kernel).oom_kills is None
    assert read_usage(1, {}) == Usage()  # nothing readable: nothing known


def test_read_usage_v2() -> None:
    texts = {
        "memory.peak": "1048576\n",
        "memory.events": "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 1\n",
        "pids.events": "max 3\n",
        "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
    }
    assert read_usage(2, texts) == Usage(
        peak_memory=MB, cpu_seconds=2.5, oom_kills=1, pids_refused=3
    )
    assert read_usage(2, {"memory.events": "oom 0\n"}).oom_kills == 0
    assert read_usage(2, {}).peak_memory is None  # memory.peak is new in Linux 5.19


HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
8:pids:/
4:memory:/process_api/abc
2:cpu,cpuacct:/
0::/
"""


def test_locate_on_a_hybrid_host() -> None:
    v1, v2 = locate(HYBRID_CGROUP, HYBRID_MOUNTS)
    assert v1 == {
        "pids": Path("/sys/fs/cgroup/pids"),
        "memory": Path("/sys/fs/cgroup/memory/process_api/abc"),
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
    }
    assert v2 == Path("/sys/fs/cgroup/unified")


def test_locate_on_a_v2_host_and_in_a_container() -> None:
    mounts = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
    v1, v2 = locate("0::/system.slice/corral.service\n", mounts)
    assert (v1, v2) == ({}, Path("/sys/fs/cgroup/system.slice/corral.service"))
    # a container sees a part of the hierarchy mounted at its /sys/fs/cgroup
    inner = "30 23 0:26 /docker/x /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    assert locate("0::/docker/x/job\n", inner)[1] == Path("/sys/fs/cgroup/job")
    assert locate("0::/elsewhere\n", inner)[1] is None  # not under what is mounted
    assert locate("", "") == ({}, None)


def fake_v2(tmp_path: Path) -> tuple[str, str, Path]:
    """A v2 tree as the kernel would show it to a worker in /corral.service."""
    own = tmp_path / "corral.service"
    own.mkdir()
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.subtree_control").write_text("")
    root = own / "corral-42"
    root.mkdir()  # what the kernel would list once the worker handed the controllers down
    (root / "cgroup.controllers").write_text("memory pids\n")
    mounts = f"30 23 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n"
    return "0::/corral.service\n", mounts, root


def test_v2_is_found_and_controllers_handed_down_in_a_fake_tree(tmp_path: Path) -> None:
    proc, mounts, root = fake_v2(tmp_path)
    found = find_cgroups("42", proc, mounts)
    assert found == Cgroups(2, {"memory": root, "pids": root, "cpu": root})
    assert (root.parent / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (root / "cgroup.subtree_control").read_text() == "+memory +pids"


def test_v2_without_the_memory_controller_is_not_used(tmp_path: Path) -> None:
    proc, mounts, root = fake_v2(tmp_path)
    (root.parent / "cgroup.controllers").write_text("cpu pids\n")  # like a hybrid's unified
    assert find_cgroups("42", proc, mounts) is None


def test_a_v2_task_cgroup_in_a_fake_tree(tmp_path: Path) -> None:
    root = tmp_path / "corral-1"
    root.mkdir()
    group = TaskCgroup(
        Cgroups(2, dict.fromkeys(("memory", "pids", "cpu"), root)),
        "t.1",
        {
            "memory": 64 * MB,
            "processes": 5,
        },
        extra_pids=2,
    )
    task = root / "t.1"
    assert group.procs == [task / "cgroup.procs"]
    assert (task / "memory.max").read_text() == str(64 * MB)
    assert (task / "memory.oom.group").read_text() == "1"
    assert (task / "pids.max").read_text() == "7"
    (task / "memory.peak").write_text("4096\n")
    (task / "memory.events").write_text("oom_kill 1\n")
    (task / "cpu.stat").write_text("usage_usec 250000\n")
    assert group.usage() == Usage(peak_memory=4096, cpu_seconds=0.25, oom_kills=1)
    (task / "cgroup.procs").write_text("")
    group.close(timeout=0.1)  # a fake keeps its files, so it stays; a real one goes


def test_no_limits_and_no_cgroup_means_no_preexec_so_the_task_can_start_by_vfork() -> None:
    assert make_preexec([]) is None
    assert make_preexec(rlimits({"file_size": 100}, False)) is not None


def test_the_coordinator_refuses_unknown_limit_keys() -> None:
    problems = task_problems(TaskSpec(argv=["x"], limits={"memroy": 1.0, "memory": 5.0}))
    assert problems == [f"limits.memroy: unknown limit (known: {', '.join(LIMIT_KEYS)})"]
    assert task_problems(TaskSpec(argv=["x"], limits={"processes": -1.0})) == [
        "limits.processes: negative"
    ]


# Real cgroups (v1 here, or v2 where the machine offers it)


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    found = find_cgroups(f"{os.getpid()}")
    if found is None or not (found.has("memory") and found.has("pids")):
        pytest.skip("no writable memory and pids cgroups here (not root, or not delegated)")
    yield found
    found.close()


def run_in(
    group: TaskCgroup, code: str, argv: list[str] | None = None, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        argv or [sys.executable, "-c", textwrap.dedent(code)],
        preexec_fn=make_preexec([], group.procs, **kw),  # type: ignore[arg-type]
        capture_output=True,
        timeout=30,
        check=False,
    )


def test_a_real_cgroup_limits_the_whole_tree_of_a_task(cgroups: Cgroups) -> None:
    # four children of 40 MB each: none alone is over 100 MB, together they are
    group = TaskCgroup(cgroups, "tree", {"memory": 100 * MB})
    try:
        done = run_in(
            group,
            """
            import os, sys, time
            kids = []
            for _ in range(4):
                pid = os.fork()
                if pid == 0:
                    block = bytearray(40 << 20)
                    for i in range(0, len(block), 4096):
                        block[i] = 1
                    time.sleep(1)
                    os._exit(0)
                kids.append(pid)
            codes = [os.waitpid(pid, 0)[1] for pid in kids]
            sys.exit(1 if any(codes) else 0)
            """,
        )
        usage = group.usage()
    finally:
        group.close()
    assert done.returncode == 1, done.stderr
    assert usage.oom_kills, usage
    assert limit_hit({"memory": 100 * MB}, done.returncode, done.stderr, usage) == "memory"
    assert usage.peak_memory is not None and 80 * MB < usage.peak_memory <= 100 * MB


def test_a_real_cgroup_counts_cpu_and_refused_forks(cgroups: Cgroups) -> None:
    group = TaskCgroup(cgroups, "forks", {"processes": 4})
    try:
        done = run_in(
            group,
            """
            import os, time
            t = time.process_time()
            while time.process_time() - t < 0.5:
                pass
            pids = []
            try:
                for _ in range(10):
                    pid = os.fork()
                    if pid == 0:
                        time.sleep(1)
                        os._exit(0)
                    pids.append(pid)
            except OSError:
                print(len(pids))
            """,
        )
        usage = group.usage()
    finally:
        group.close()
    assert done.stdout.strip() == b"3", done.stderr  # with the task itself, 4
    assert usage.pids_refused >= 1
    assert usage.cpu_seconds is not None and 0.4 < usage.cpu_seconds < 5


def test_closing_a_real_cgroup_kills_what_escaped_the_process_tree(cgroups: Cgroups) -> None:
    group = TaskCgroup(cgroups, "escape", {})
    try:
        done = run_in(
            group,
            """
            import os, subprocess
            # a daemon: a session of its own, nothing shared with its parent
            out = subprocess.DEVNULL
            p = subprocess.Popen(["sleep", "300"], start_new_session=True, stdout=out, stderr=out)
            print(p.pid)
            """,
        )
        daemon = psutil.Process(int(done.stdout))
        assert daemon.is_running() and daemon.status() != psutil.STATUS_ZOMBIE
    finally:
        group.close()
    daemon.wait(5)
    assert not group.dirs[0].exists()


def test_a_task_joins_its_cgroup_before_it_drops_to_its_user(cgroups: Cgroups) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can run a task as another user")
    group = TaskCgroup(cgroups, "user", {"processes": 8})
    try:
        # a program the other user may run (this Python may live in root's home)
        argv = ["/bin/sh", "-c", "echo $(id -u) && cat /proc/self/cgroup"]
        done = run_in(group, "", argv, user=(65534, 65534))
    finally:
        group.close()
    assert done.returncode == 0, done.stderr
    uid, *lines = done.stdout.decode().splitlines()
    assert uid == "65534"
    assert any(line.endswith("/user") for line in lines), lines


def test_output_size_error_gives_the_sizes_and_the_largest_files() -> None:
    from corral.worker.limits import output_size_error

    sizes = {"small": 10, "out/big.bin": 3 << 20, "mid": 1 << 20, "tiny": 1, "b": 1 << 20}
    assert output_size_error(sizes, 8 << 20) is None
    assert output_size_error(sizes, 4 << 20) == (
        "limit_exceeded: output_size (5.0 MB in 5 files of 4.0 MB;"
        " largest: out/big.bin 3.0 MB, b 1.0 MB, mid 1.0 MB and 2 more)"
    )
    assert output_size_error({"a": 2048}, 1024) == (
        "limit_exceeded: output_size (2.0 KB in 1 file of 1.0 KB; largest: a 2.0 KB)"
    )
