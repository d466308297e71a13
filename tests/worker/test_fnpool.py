"""The function-runner pool: its pure decisions, the runner's serve mode, and the pool driving
real runner processes (no sandbox, no coordinator; the farm tests are in integration/)."""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
import msgspec
import psutil
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from corral._unix import UnixAddress, unix_path
from corral.client._functions import RESULT_FILE, RUNNER, build_payload, dump_function
from corral.protocol import Assignment, TaskSpec
from corral.worker.allowlist import AllowPolicy
from corral.worker.executor import Finished, TaskProcess, task_env
from corral.worker.fnpool import (
    FnPool,
    SeatView,
    choose_seat,
    hostable,
    pool_key,
    poolable,
    scope_of,
)
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


def _send(sock: socket.socket, task: Path, env: dict[str, str]) -> None:
    body = {"argv": RUNNER[3:], "cwd": str(task / "work"), "env": env}
    with (task / "stdout").open("wb") as out, (task / "stderr").open("wb") as err:
        socket.send_fds(sock, [msgspec.msgpack.encode(body)], [out.fileno(), err.fileno()])


def print_and_spawn(x: int, spawn: bool) -> int:
    print("value", x, os.environ["X"])
    print("warning", x, file=sys.stderr)
    if spawn:
        subprocess.Popen(["sleep", "60"])  # left running: the answer says so
    return os.getpid()


def test_serve_answers_each_call_with_the_exit_code_of_a_fresh_process(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    argv = [sys.executable, "-m", "corral.worker.pyrunner", "--serve"]
    with ours, theirs, subprocess.Popen(argv, stdin=theirs, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline() == READY
            calls = [
                (print_and_spawn, (7, False), [b"0"]),
                (divmod, (1, 0), [b"1"]),
                (print_and_spawn, (8, True), [b"0", b"dirty"]),
                (os._exit, (3,), []),
            ]
            for i, (fn, args, answer) in enumerate(calls):
                task = tmp_path / f"t{i}"
                _call_files(task / "work", fn, *args)
                _send(ours, task, {"PATH": os.defpath, "X": str(i)})
                # the code, what the call used (its CPU, and the runner's peak during it)
                words = proc.stdout.readline().split()
                used = dict(w.split(b"=") for w in words if b"=" in w)
                assert [w for w in words if b"=" not in w] == answer
                if answer:
                    assert float(used[b"cpu"]) >= 0 and int(used[b"peak"]) > 1 << 20
                if i < 3:
                    record = pickle.loads((task / "work" / RESULT_FILE).read_bytes())
                    assert record[0] == ("error" if i == 1 else "ok")
            out, err = (tmp_path / "t0" / "stdout"), (tmp_path / "t0" / "stderr")
            assert out.read_text() == "value 7 0\n" and err.read_text() == "warning 7\n"
            assert pickle.loads((tmp_path / "t2" / "work" / RESULT_FILE).read_bytes()) == (
                "ok",
                proc.pid,
            )
            assert proc.wait(10) == 3
        finally:
            for child in psutil.Process().children(recursive=True):
                if child.pid != proc.pid and "sleep" in child.name():
                    child.kill()
            proc.kill()


# the pool, on real runner processes
def _guard() -> Guard:
    return Guard(SandboxPolicy(None), AllowPolicy("all"))


class Worker:
    """Just enough of the agent to claim, stage, call and clean up."""

    def __init__(self, tmp: Path, slots: int = 1, shared: bool = False) -> None:
        self.tmp = tmp
        self.shared = shared  # claims whose runner makes their directory (the seat's own)
        self.running: set[str] = set()
        self.pool = FnPool(_guard(), tmp, slots, self.running.__contains__)
        self.n = 0
        self.calls: dict[str, tuple[Any, tuple[Any, ...]]] = {}

    def lease(self, job: str, fn: Any, *args: Any, **spec: Any) -> tuple[Assignment, Path]:
        self.n += 1
        a = Assignment(f"t{self.n}", job, f"l{self.n}", 1, 0.0, fn_spec(**spec))
        task_dir = self.pool.claim(a, shared=self.shared)
        self.calls[a.task_id] = (fn, args)
        self.running.add(a.task_id)
        return a, task_dir

    async def call(
        self, a: Assignment, task_dir: Path, process: TaskProcess | None = None
    ) -> tuple[Finished | None, Any]:
        # as the worker stages a task's inputs itself: its runner stopped, then the directory
        if self.pool.claimed(a):
            await self.pool.hold(a)
        else:
            (task_dir / "work").mkdir(parents=True, exist_ok=True)
        fn, args = self.calls.pop(a.task_id)
        _call_files(task_dir / "work", fn, *args)
        env = task_env({}, task_dir / "work", {})
        finished = await self.pool.call(a, process or TaskProcess(), env, task_dir)
        result = task_dir / "work" / RESULT_FILE
        record = pickle.loads(result.read_bytes()) if result.exists() else None
        self.running.discard(a.task_id)
        shutil.rmtree(task_dir)
        return finished, record


def pid_and_dir(_: Any = None) -> tuple[int, str, str, list[str]]:
    cwd = os.getcwd()
    return os.getpid(), cwd, os.environ["HOME"], os.listdir(os.path.dirname(cwd))


def test_the_pool_reuses_a_runner_per_job_and_replaces_what_dies(tmp_path: Path) -> None:
    async def scenario() -> None:
        w = Worker(tmp_path)
        try:
            pids = []
            for _ in range(3):
                a, task_dir = w.lease("j1", pid_and_dir)
                assert (task_dir / "work").is_symlink()
                inner = (task_dir / "work").resolve()
                assert inner.parent.parent.parent == tmp_path / "fn"
                finished, record = await w.call(a, task_dir)
                assert (finished.exit_code, finished.error) == (0, None)
                pid, cwd, home, siblings = record[1]
                # the task's directory as the runner sees it; stdout and stderr are not there
                assert cwd == home == str(inner) and siblings == ["work"]
                pids.append(pid)
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
            assert not (task_dir / "work").is_symlink()  # a fresh process's task dir
            assert await w.call(a, task_dir) == (None, None)
        finally:
            await w.pool.aclose()
        assert list((tmp_path / "fn").iterdir()) == []  # roots and task dirs alike

    asyncio.run(scenario())


def test_a_busy_pool_sends_further_tasks_to_fresh_processes(tmp_path: Path) -> None:
    async def scenario() -> None:
        w = Worker(tmp_path)
        try:
            first, first_dir = w.lease("j1", time.sleep, 0.5)
            second, second_dir = w.lease("j1", os.getpid)  # the only runner is claimed
            assert (first_dir / "work").is_symlink() and not (second_dir / "work").is_symlink()
            w.running.discard(first.task_id)  # it ended before its call (say, refused)
            shutil.rmtree(first_dir)
            third, third_dir = w.lease("j1", os.getpid)
            assert (third_dir / "work").is_symlink()  # the first task's claim lapsed
            assert not (first_dir / "work").exists()
            assert (await w.call(third, third_dir))[0].exit_code == 0
        finally:
            await w.pool.aclose()

    asyncio.run(scenario())


def tick_in_the_background(path: str) -> int:
    def tick() -> None:
        while True:
            with open(path, "a") as f:
                f.write(".")
            time.sleep(0.01)

    threading.Thread(target=tick, daemon=True).start()
    time.sleep(0.1)
    return os.getpid()


def spawn(_: Any = None) -> int:
    subprocess.Popen(["sleep", "60"], start_new_session=True)
    return os.getpid()


def test_between_calls_nothing_of_a_call_runs_on(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"

    async def scenario() -> None:
        w = Worker(tmp_path)
        try:
            a, task_dir = w.lease("j1", tick_in_the_background, str(ticks))
            pid = (await w.call(a, task_dir))[1][1]
            # stopped once its call has answered (off the result's path): soon after
            for _ in range(200):
                if psutil.Process(pid).status() == psutil.STATUS_STOPPED:
                    break
                await asyncio.sleep(0.005)
            size = ticks.stat().st_size
            await asyncio.sleep(0.3)
            assert ticks.stat().st_size == size  # stopped: the thread too
            assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
            a, task_dir = w.lease("j1", time.sleep, 0.2)
            await w.call(a, task_dir)
            assert ticks.stat().st_size > size  # running during the next call

            a, task_dir = w.lease("j1", spawn)
            pid = (await w.call(a, task_dir))[1][1]
            a, task_dir = w.lease("j1", os.getpid)
            assert (await w.call(a, task_dir))[1][1] != pid  # left a process: replaced
            sleeps = [
                p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "60"]
            ]
            assert [p for p in sleeps if p.ppid() == pid] == []
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
            assert (finished.exit_code, finished.error) == (0, None)
            assert record == ("ok", None)  # 1.5 s of 3.8
            assert process.proc is None  # let go; the pool keeps it stopped till the next call

            a, task_dir = w.lease("j1", time.sleep, 30, limits={"wall_time": 2.5})
            started = time.monotonic()
            finished, _ = await w.call(a, task_dir)
            assert finished == Finished(None, "limit_exceeded: wall_time")  # nothing measured
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


def test_the_scope_is_the_owner_when_the_coordinator_names_one() -> None:
    spec = fn_spec()
    mine = Assignment("t1", "j1", "l1", 1, 0.0, spec, owner="alice")
    also_mine = Assignment("t2", "j2", "l2", 1, 0.0, spec, owner="alice")
    theirs = Assignment("t3", "j1", "l3", 1, 0.0, spec, owner="bob")
    assert scope_of(mine) == scope_of(also_mine) != scope_of(theirs)
    unnamed = Assignment("t4", "j1", "l4", 1, 0.0, spec)
    assert scope_of(unnamed) == "job:j1"


def test_commands_are_hostable_unless_they_set_process_limits() -> None:
    assert hostable(TaskSpec(argv=["true"]))
    assert hostable(TaskSpec(argv=["sh", "-c", "x"], shell=True, limits={"wall_time": 2}))
    assert not hostable(TaskSpec(argv=["true"], limits={"memory": 1e9}))
    assert not hostable(TaskSpec(argv=["true"], limits={"processes": 4}))


def test_a_seat_relay_serves_the_job_token_of_the_task_it_runs_now(tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def echo(request: Request) -> Response:
        seen.append(request.headers.get("authorization"))
        return JSONResponse({})

    app = Starlette(routes=[Route("/api/v1/jobs/{id}", echo)])

    def upstream() -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app)
        return httpx.AsyncClient(transport=transport, base_url="http://coordinator/api/v1")

    async def get(url: str, path: str) -> httpx.Response:
        address = UnixAddress(unix_path(url) or "")
        transport = httpx.AsyncHTTPTransport(uds=address.short)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://x/api/v1") as http:
                return await http.get(path)
        finally:
            address.close()

    async def scenario() -> None:
        w, http = Worker(tmp_path), upstream()
        urls = []
        try:
            for job, token in [("j1", "crj_a"), ("j1", "crj_b"), ("j2", "crj_c")]:
                a, task_dir = w.lease(job, os.getpid)
                a.token = token
                async with w.pool.seat_relay(a, http) as url:
                    assert url is not None
                    urls.append(url)
                    assert (await get(url, f"/jobs/{job}")).status_code == 200
                between = await get(url, f"/jobs/{job}")  # no task runs on the seat now
                assert between.status_code == 403 and "serves none" in between.text
                await w.call(a, task_dir)
            a, task_dir = w.lease("j2", os.getpid, limits={"memory": 4e9})  # no seat
            async with w.pool.seat_relay(a, http) as url:
                assert url is None
            await w.call(a, task_dir)
        finally:
            await w.pool.aclose()
            await http.aclose()
        # one socket while one job's tasks follow each other; another job's is another root
        assert urls[0] == urls[1] != urls[2]
        assert seen == ["Bearer crj_a", "Bearer crj_b", "Bearer crj_c"]
        assert list((tmp_path / "fn").iterdir()) == []  # the sockets went with their roots

    asyncio.run(scenario())


def write_and_read(name: str) -> tuple[int, bool, int]:
    """A call that reads an input the runner wrote, and leaves outputs of three sizes."""
    data = open(name, "rb").read()
    os.makedirs("out", exist_ok=True)
    with open("out/small.txt", "wb") as f:
        f.write(data.upper())
    with open("big.bin", "wb") as f:
        f.write(b"x" * (200 * 1024))  # over what an answer carries
    os.symlink("/etc/passwd", "link")  # never followed, never reported
    return os.getpid(), os.stat(name).st_uid == os.getuid(), len(os.listdir(".corral"))


def test_a_runner_makes_the_task_directory_and_reports_what_the_call_made(tmp_path: Path) -> None:
    def inputs_of(a: Assignment) -> dict[str, Any]:
        fn, args = w.calls.pop(a.task_id)
        payload = build_payload(dump_function(fn), [(args, {})], chunked=False)
        return {n: (0o644, sha, payload.blobs[sha]) for n, sha in payload.files.items()}

    w = Worker(tmp_path, shared=True)

    async def scenario() -> None:
        try:
            a, task_dir = w.lease("j1", write_and_read, "in.txt")
            a.spec = msgspec.structs.replace(a.spec, outputs=[])  # everything new comes back
            inside = {**inputs_of(a), "in.txt": (0o600, "0" * 64, b"hello")}
            # a link to the seat's own task directory, out of the runner's root, where the
            # runner makes `work`
            assert task_dir == tmp_path / "tasks" / f"{a.task_id}.1" and w.pool.owns(task_dir)
            seat_dir = Path(os.readlink(task_dir))
            assert seat_dir.parent == tmp_path / "fn" and seat_dir.suffix == ".io"
            assert not os.path.lexists(os.readlink(task_dir / "work"))
            finished = await w.pool.call(
                a, TaskProcess(), env_for(task_dir), task_dir, inside=inside
            )
            assert finished is not None and (finished.exit_code, finished.error) == (0, None)
            found = {rel: (mode, size, data) for rel, mode, size, data in finished.found or []}
            assert sorted(found) == sorted(["big.bin", "out/small.txt", RESULT_FILE])  # no link
            assert found["out/small.txt"] == (0o644 & ~_umask(), 5, b"HELLO")
            assert found["big.bin"][1:] == (200 * 1024, None)  # left for the worker to read
            status, (pid, own, state) = pickle.loads(found[RESULT_FILE][2] or b"")
            assert status == "ok" and own and state == 1  # `.corral/checkpoint` made too
            # the worker reads big.bin itself next: the runner is stopped first
            assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
            w.running.discard(a.task_id)

            a, again = w.lease("j1", os.getpid)
            inside = inputs_of(a)
            finished = await w.pool.call(a, TaskProcess(), env_for(again), again, inside=inside)
            assert finished is not None and finished.exit_code == 0
            (result,) = [f for f in finished.found or [] if f[0] == RESULT_FILE]
            assert pickle.loads(result[3] or b"") == ("ok", pid)  # the same runner
            # the same directories, emptied of the first task's files for this one
            assert again != task_dir and Path(os.readlink(again)) == seat_dir
            w.pool.unlink(task_dir)  # as the agent does once its result is answered
            assert not os.path.lexists(task_dir) and seat_dir.is_dir()
            task_dir = again
            assert sorted(os.listdir(task_dir / "work")) == sorted(
                [".corral", *inside, RESULT_FILE]
            )
            # all it made came back in the answer, and it left no thread: it was not stopped
            assert psutil.Process(pid).status() != psutil.STATUS_STOPPED
            w.running.discard(a.task_id)
        finally:
            await w.pool.aclose()
        assert list((tmp_path / "fn").iterdir()) == []  # the seat's directories went with it

    asyncio.run(scenario())


def env_for(task_dir: Path) -> dict[str, str]:
    return task_env({}, task_dir / "work", {})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
