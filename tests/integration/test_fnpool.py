"""Pooled function runners (worker/fnpool.py) on a real farm, with and without bubblewrap.

Each function below names the interpreter that ran it: its pid, and a token it leaves in `sys`
(under bwrap every sandbox has its own PID namespace, so pids alone repeat). One worker with a
single slot, so consecutive tasks meet the same runner when the pool reuses it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from corral.client import Client, RemoteTraceback, TaskFailed
from corral.protocol import TaskSpec

from .conftest import Farm, isolated_env

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(120)


def who(_: Any = None) -> str:
    """The interpreter running this call: the same string for every call it makes."""
    token = sys.__dict__.setdefault("_corral_test_token", uuid.uuid4().hex)
    return f"{os.getpid()}:{token}"


def where(_: Any = None) -> dict[str, str]:
    print("to stdout")
    print("to stderr", file=sys.stderr)
    return {
        "cwd": os.getcwd(),
        "task": os.environ.get("CORRAL_TASK_ID", ""),
        "tmp": tempfile.gettempdir(),
        "home": os.environ.get("HOME", ""),
        "files": ",".join(sorted(os.listdir("."))),
        "argv0": sys.argv[0],
        "siblings": ",".join(os.listdir(os.path.dirname(os.getcwd()))),
    }


def die(code: int) -> None:
    sys.stdout.flush()
    os._exit(code)


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fail(message: str) -> None:
    raise KeyError(message)


@pytest.fixture(scope="module", params=["no-sandbox", "bwrap"])
def one_slot(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Farm]:
    """A coordinator and one worker with one slot, with or without the sandbox."""
    root = tmp_path_factory.mktemp(request.param)
    f = Farm(root, isolated_env(root), 3.0)
    try:
        f.start_server()
        f.start_worker(1, args=("--no-sandbox",) if request.param == "no-sandbox" else ())
        yield f
    finally:
        f.close()


@pytest.fixture
def client(one_slot: Farm) -> Iterator[Client]:
    with Client(one_slot.url, one_slot.token) as c:
        yield c


def test_one_owners_tasks_share_a_runner_and_another_owner_gets_its_own(
    one_slot: Farm, client: Client
) -> None:
    first = client.map(who, range(20))
    names = {f.result(60) for f in first}
    assert len({f.job_id for f in first}) == 1
    assert len(names) == 1, names
    second = client.map(who, range(3))  # another job, the same submitter
    assert {f.job_id for f in second}.isdisjoint({f.job_id for f in first})
    assert {f.result(60) for f in second} == names
    rc, out, err = one_slot.cli("token", "create", "--role", "submit", "--name", "bob", "--json")
    assert rc == 0, err
    with Client(one_slot.url, json.loads(out)["secret"]) as bob:
        theirs = {f.result(60) for f in bob.map(who, range(3))}
    assert len(theirs) == 1 and theirs != names


def test_each_call_has_its_task_dir_env_and_output_files(one_slot: Farm, client: Client) -> None:
    futures = client.map(where, range(2))
    for future in futures:
        seen = future.result(60)
        assert seen["task"] == future.task_id
        # the seat's task directory, made for each task anew (out of the last one)
        assert Path(seen["cwd"]).name == "work" and seen["home"] == seen["cwd"]
        # nothing of the other task's: its inputs and the state directory only
        assert seen["files"] == ".corral,corral-call.pkl,corral-fn.pkl"
        assert seen["tmp"] == seen["cwd"]
        assert seen["siblings"] == "work"  # stdout and stderr are out of the task's reach
        assert seen["argv0"].endswith("pyrunner.py")
        assert future.task_id is not None
        task = client.task(future.task_id)
        assert task.stdout is not None and task.stderr is not None
        assert client.read_blob(task.stdout) == b"to stdout\n"
        assert client.read_blob(task.stderr) == b"to stderr\n"
        assert set(task.manifest) == {"corral-result.pkl"}


def test_a_runner_that_dies_fails_only_its_own_task(client: Client) -> None:
    before = client.submit(who).result(60)
    with pytest.raises(TaskFailed, match="exit code 3"):
        client.submit_with({"max_attempts": 1}, die, 3).result(60)
    after = client.map(who, range(3))
    names = {f.result(60) for f in after}
    assert len(names) == 1 and names != {before}


def test_exceptions_come_back_as_themselves(client: Client) -> None:
    with pytest.raises(KeyError, match="nope") as info:
        client.submit(fail, "nope").result(60)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "in fail" in info.value.__cause__.tb
    assert client.submit(who).result(60)  # the runner serves on


def test_a_memory_limit_takes_a_fresh_process(client: Client) -> None:
    pooled = {f.result(60) for f in client.map(who, range(2))}
    options = {"limits": {"memory": 4e9}}
    fresh = {f.result(60) for f in client.map(who, range(2), options=options)}
    assert len(pooled) == 1 and len(fresh) == 2 and pooled.isdisjoint(fresh)


def test_wall_time_kills_the_call_and_the_next_task_gets_a_new_runner(client: Client) -> None:
    options = {"limits": {"wall_time": 1.5}, "max_attempts": 1}
    before = client.submit_with(options, who).result(60)
    started = time.monotonic()
    with pytest.raises(TaskFailed, match="limit_exceeded: wall_time"):
        client.submit_with(options, nap, 30).result(60)
    assert time.monotonic() - started < 20
    after = client.submit_with(options, who).result(60)
    assert after != before


def test_commands_run_in_a_runner_unless_they_set_process_limits(
    one_slot: Farm, client: Client
) -> None:
    parent = "tr '\\000' ' ' < /proc/$PPID/cmdline"
    specs = [
        TaskSpec(argv=["sh", "-c", parent], limits={"wall_time": 30}),
        TaskSpec(argv=["sh", "-c", parent], limits={"memory": 4e9}),
        TaskSpec(argv=["sh", "-c", "exit 3"]),
        TaskSpec(argv=["no-such-program-here"], max_attempts=1),
    ]
    job = client.submit_job(specs)
    one_slot.wait_job(client, job.id, timeout=60)
    hosted, limited, three, missing = client.tasks(job.id)
    assert "pyrunner --serve" in client.log(hosted.id)[0].decode()  # a child of the runner
    assert "pyrunner" not in client.log(limited.id)[0].decode()  # its own process, as before
    assert (three.status, three.exit_code) == ("failed", 3)
    assert missing.status == "failed"
    assert b"no-such-program-here" in client.log(missing.id, "stderr")[0] or missing.error
