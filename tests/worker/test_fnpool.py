"""The function-runner pool: its pure decisions, the runner's serve mode, and the pool driving
real runner processes (no sandbox, no coordinator; the farm tests are in integration/)."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest

from corral.client._functions import RESULT_FILE, RUNNER, build_payload, dump_function
from corral.protocol import Assignment, TaskSpec
from corral.worker.allowlist import AllowPolicy
from corral.worker.executor import Finished, TaskProcess, task_env
from corral.worker.fnpool import FnPool, SeatView, choose_seat, pool_key, poolable
from corral.worker.guard import Guard
from corral.worker.pyrunner import READY
from corral.worker.sandbox import SandboxPolicy

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(60)


def fn_spec(**kw: Any) -> TaskSpec:
    return TaskSpec(argv=list(RUNNER), outputs=[RESULT_FILE], **kw)


# the decisions
def test_only_function_calls_with_pooled_limits_may_use_a_runner() -> None:
    assert poolable(fn_spec())
    assert poolable(fn_spec(limits={"wall_time": 5, "output_size": 1e6, "memory": 0}))
    for limit in ("memory", "cpu_time", "file_size", "processes"):
        assert not poolable(fn_spec(limits={limit: 100}))
    assert not poolable(TaskSpec(argv=["python3", "-m", "corral.worker.pyrunner"]))
    assert not poolable(TaskSpec(argv=["sh", "-c", "true"]))
    assert not poolable(TaskSpec(argv=list(RUNNER), shell=True))


def test_the_key_is_the_job_env_network_and_limits() -> None:
    base = pool_key("j1", fn_spec(requires={"python": "3.11"}))
    assert base == pool_key("j1", fn_spec(requires={"python": "3.11", "os": "linux"}))
    assert base == pool_key("j1", fn_spec(limits={"memory": 0}))
    for other in (
        pool_key("j2", fn_spec()),
        pool_key("j1", fn_spec(env={"A": "1"})),
        pool_key("j1", fn_spec(requires={"network": "yes"})),
        pool_key("j1", fn_spec(limits={"wall_time": 3})),
    ):
        assert other != base


A, B, C = (pool_key(j, fn_spec()) for j in ("a", "b", "c"))


def test_a_seat_is_chosen_by_key_then_emptiness_then_least_recent_use() -> None:
    seats = [
        SeatView(A, False, True, 5.0),
        SeatView(B, False, True, 1.0),
        SeatView(None, False, False),
    ]
    assert choose_seat(seats, A) == 0
    assert choose_seat(seats, B) == 1
    assert choose_seat(seats, C) == 2  # an empty seat before replacing anyone
    seats[2] = SeatView(C, True, True)
    assert choose_seat(seats, C) == 1  # C's seat is busy: replace the least recently used
    seats[0] = SeatView(A, True, True)
    seats[1] = SeatView(B, True, True)
    assert choose_seat(seats, A) is None  # all busy: a fresh process
    # a dead runner of the same key keeps its seat; a dead one of another key is free to take
    assert choose_seat([SeatView(B, False, True), SeatView(A, False, False)], A) == 1
    assert choose_seat([SeatView(B, False, True, 0.0), SeatView(A, False, False)], C) == 1


# the runner's serve mode, as a bare process
def _call_files(work: Path, fn: Any, *args: Any) -> None:
    work.mkdir(parents=True, exist_ok=True)
    payload = build_payload(dump_function(fn), [(args, {})], chunked=False)
    for name, sha in payload.files.items():
        (work / name).write_bytes(payload.blobs[sha])


def _request(task: Path, env: dict[str, str] | None = None) -> bytes:
    body = {
        "argv": RUNNER[3:],
        "cwd": str(task / "work"),
        "env": env or {"PATH": os.defpath},
        "stdout": str(task / "stdout"),
        "stderr": str(task / "stderr"),
    }
    return json.dumps(body).encode() + b"\n"


def spawn_and_print(x: int) -> int:
    print("value", x)
    print("warning", x, file=sys.stderr)
    subprocess.Popen(["sleep", "60"])  # left running: killed after the call
    return os.getpid()


def test_serve_answers_each_call_with_the_exit_code_of_a_fresh_process(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "corral.worker.pyrunner", "--serve"]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _serve_three_calls(proc, tmp_path)
            assert proc.wait(10) == 3
        finally:
            proc.kill()


def _serve_three_calls(proc: subprocess.Popen[bytes], tmp_path: Path) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline() == READY
    calls = [(spawn_and_print, (7,), b"0\n"), (divmod, (1, 0), b"1\n"), (os._exit, (3,), b"")]
    for i, (fn, args, code) in enumerate(calls):
        task = tmp_path / f"t{i}"
        _call_files(task / "work", fn, *args)
        proc.stdin.write(_request(task, {"PATH": os.defpath, "X": str(i)}))
        proc.stdin.flush()
        assert proc.stdout.readline() == code
        if i == 0:
            record = pickle.loads((task / "work" / RESULT_FILE).read_bytes())
            assert record == ("ok", proc.pid)
            assert (task / "stdout").read_text() == "value 7\n"
            assert (task / "stderr").read_text() == "warning 7\n"
            assert psutil.Process(proc.pid).children() == []  # the sleep is gone
        elif i == 1:
            record = pickle.loads((task / "work" / RESULT_FILE).read_bytes())
            assert record[0] == "error" and record[2] == "ZeroDivisionError"


# the pool, on real runner processes
def _guard() -> Guard:
    return Guard(SandboxPolicy(None), AllowPolicy("all"))


class Worker:
    """Just enough of the agent to claim, stage and call."""

    def __init__(self, tmp: Path, slots: int = 1) -> None:
        self.running: set[str] = set()
        self.pool = FnPool(_guard(), tmp, slots, self.running.__contains__)
        self.n = 0

    def lease(self, job: str, fn: Any, *args: Any, **spec: Any) -> tuple[Assignment, Path]:
        self.n += 1
        a = Assignment(f"t{self.n}", job, f"l{self.n}", 1, 0.0, fn_spec(**spec))
        task_dir = self.pool.claim(a) / "tasks" / f"{a.task_id}.1"
        _call_files(task_dir / "work", fn, *args)
        self.running.add(a.task_id)
        return a, task_dir

    async def call(
        self, a: Assignment, task_dir: Path, process: TaskProcess | None = None
    ) -> tuple[Finished | None, Any]:
        env = task_env({}, task_dir / "work", {})
        finished = await self.pool.call(a, process or TaskProcess(), env, task_dir)
        self.running.discard(a.task_id)
        result = task_dir / "work" / RESULT_FILE
        return finished, pickle.loads(result.read_bytes()) if result.exists() else None


def test_the_pool_reuses_a_runner_per_job_and_replaces_what_dies(tmp_path: Path) -> None:
    async def scenario() -> None:
        w = Worker(tmp_path)
        try:
            pids = []
            for _ in range(3):
                a, task_dir = w.lease("j1", os.getpid)
                assert task_dir.parent.parent.parent == tmp_path / "fn"
                finished, record = await w.call(a, task_dir)
                assert finished == Finished(0, None)
                pids.append(record[1])
            assert len(set(pids)) == 1 and pids[0] != os.getpid()
            a, task_dir = w.lease("j1", os._exit, 3)
            assert await w.call(a, task_dir) == (Finished(3, None), None)
            assert not psutil.pid_exists(pids[0])
            a, task_dir = w.lease("j1", os.getpid)
            replaced = (await w.call(a, task_dir))[1][1]
            assert replaced != pids[0]
            a, task_dir = w.lease("j2", os.getpid)  # another job takes the only seat
            assert (await w.call(a, task_dir))[1][1] not in (replaced, pids[0])
            a, task_dir = w.lease("j2", os.getpid, limits={"memory": 4e9})
            assert task_dir.parent.parent == tmp_path  # a fresh process: the work dir
            assert await w.call(a, task_dir) == (None, None)
        finally:
            await w.pool.aclose()
        assert not list((tmp_path / "fn").glob("*.log"))

    asyncio.run(scenario())


def test_a_busy_pool_sends_further_tasks_to_fresh_processes(tmp_path: Path) -> None:
    async def scenario() -> None:
        w = Worker(tmp_path)
        try:
            first, first_dir = w.lease("j1", time.sleep, 0.5)
            second, second_dir = w.lease("j1", os.getpid)  # the only runner is claimed
            assert first_dir.parent.parent.parent == tmp_path / "fn"
            assert second_dir.parent.parent == tmp_path
            w.running.discard(first.task_id)  # it ended before its call (say, refused)
            third, third_dir = w.lease("j1", os.getpid)
            assert third_dir.parent.parent == first_dir.parent.parent  # the claim lapsed
            assert (await w.call(third, third_dir))[0] == Finished(0, None)
        finally:
            await w.pool.aclose()

    asyncio.run(scenario())


def test_kill_suspend_and_wall_time_act_on_the_runner_during_a_call(tmp_path: Path) -> None:
    async def scenario() -> None:
        w = Worker(tmp_path)
        try:
            a, task_dir = w.lease("j1", time.sleep, 1.5, limits={"wall_time": 2.5})
            process = TaskProcess()
            call = asyncio.create_task(w.call(a, task_dir, process))
            while process.proc is None:
                await asyncio.sleep(0.01)
            runner = psutil.Process(process.proc.pid)
            await asyncio.sleep(0.3)
            process.suspend()
            await asyncio.sleep(0.3)
            assert runner.status() == psutil.STATUS_STOPPED
            await asyncio.sleep(1.7)
            process.resume()
            finished, record = await asyncio.wait_for(call, 20)
            assert finished == Finished(0, None) and record == ("ok", None)  # 1.5 s of 3.8
            assert process.proc is None and runner.status() != psutil.STATUS_STOPPED

            a, task_dir = w.lease("j1", time.sleep, 30, limits={"wall_time": 2.5})
            started = time.monotonic()
            finished, _ = await w.call(a, task_dir)
            assert finished == Finished(None, "limit_exceeded: wall_time")
            assert time.monotonic() - started < 10 and not runner.is_running()

            a, task_dir = w.lease("j1", time.sleep, 30, limits={"wall_time": 2.5})
            process = TaskProcess()
            call = asyncio.create_task(w.call(a, task_dir, process))
            while process.proc is None:
                await asyncio.sleep(0.01)
            process.kill()
            finished, _ = await asyncio.wait_for(call, 10)
            assert finished is not None and finished.error == "killed"
        finally:
            await w.pool.aclose()

    asyncio.run(scenario())
