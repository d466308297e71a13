"""Task limits: which rlimits are set, and which limit a task's end points to."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

from corral.protocol import LIMIT_KEYS, TaskSpec, task_problems
from corral.worker.limits import limit_hit, make_preexec, rlimits

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
        preexec_fn=make_preexec(rlimits({"file_size": 100}, False), None),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert b"File too large" in done.stderr
    assert out.stat().st_size <= 100


def test_signals_name_the_limit() -> None:
    limits = {"cpu_time": 1.0, "file_size": 10.0}
    assert limit_hit(limits, -signal.SIGXCPU, b"", False) == "cpu_time"
    assert limit_hit(limits, 128 + signal.SIGXCPU, b"", False) == "cpu_time"  # via sh or bwrap
    assert limit_hit(limits, -signal.SIGXFSZ, b"", False) == "file_size"
    assert limit_hit({}, -signal.SIGXCPU, b"", False) is None  # no such limit was set


def test_messages_name_the_limit() -> None:
    assert limit_hit({"memory": 1.0}, 1, b"...\nMemoryError\n", False) == "memory"
    assert (
        limit_hit({"file_size": 1.0}, 1, b"OSError: [Errno 27] File too large", False)
        == "file_size"
    )
    tail = b"BlockingIOError: [Errno 11] Resource temporarily unavailable"
    assert limit_hit({"processes": 3.0}, 1, tail, False) == "processes"
    assert limit_hit({"memory": 1.0}, 1, tail, False) is None


def test_success_is_never_a_limit_and_the_cgroup_counter_wins() -> None:
    assert limit_hit({"memory": 1.0}, 0, b"MemoryError", False) is None
    assert limit_hit({"processes": 3.0}, 0, b"", True) == "processes"
    assert limit_hit({"processes": 3.0}, 1, b"", False) is None


def test_the_coordinator_refuses_unknown_limit_keys() -> None:
    problems = task_problems(TaskSpec(argv=["x"], limits={"memroy": 1.0, "memory": 5.0}))
    assert problems == [f"limits.memroy: unknown limit (known: {', '.join(LIMIT_KEYS)})"]
    assert task_problems(TaskSpec(argv=["x"], limits={"processes": -1.0})) == [
        "limits.processes: negative"
    ]


def test_no_limits_and_no_cgroup_means_no_preexec_so_the_task_can_start_by_vfork() -> None:
    assert make_preexec([], None) is None
    assert make_preexec(rlimits({"file_size": 100}, False), None) is not None
