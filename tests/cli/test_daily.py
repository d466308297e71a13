"""Daily use of the CLI (issue 15), through CliRunner at 80 columns against an in-process
coordinator whose store the tests fill directly: jobs with chosen ids, so prefixes collide
on purpose; tasks finished with chosen outcomes, so `wait` has reasons to print."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

from client.inprocess import TOKEN, URL, App
from corral.cli import cli
from corral.cli._complete import id_suggestions
from corral.client import Client
from corral.coordinator.store import NewTask, Outcome, Store
from corral.protocol import TaskSpec

T = TypeVar("T")
JOB_A = "3dce" + "0" * 28
JOB_B = "3dcf" + "1" * 28
JOB_C = "9a9a" + "2" * 28
LONG = "a job name much longer than any terminal column has room for, really very long"


def on_loop(app: App, fn: Callable[[Store], T]) -> T:
    """Run `fn(store)` on the app's loop (the store belongs to that thread)."""

    async def call() -> T:
        return fn(app.store)

    return app.submit(call()).result(10)


def task(n: int, name: str = "", **kw: Any) -> NewTask:
    return NewTask(f"{n:04x}" + "c" * 28, n, TaskSpec(argv=["sh", "-c", "exit 3"], name=name, **kw))


def _fill(store: Store) -> None:
    store.create_job(JOB_A, LONG, "admin", 1.0, [task(1, "build"), task(2, "test")])
    store.create_job(JOB_B, "second", "admin", 2.0, [task(3, limits={"memory": 256 << 20})])
    store.create_job(JOB_C, "third", "admin", 3.0, [task(4), task(5)])
    for i in range(3):
        caps = {"os": "linux", "arch": "x86_64", "slots": 1, "limits": "cgroup"}
        store.register_worker(f"{i:032x}", f"a-rather-long-worker-host-name-{i}", 1, caps, 1.0)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    (tmp_path / "coordinator").mkdir()
    with App(tmp_path / "coordinator") as found:
        on_loop(found, _fill)
        monkeypatch.setattr(
            "corral.cli._common.Client",
            lambda *_: Client(URL, TOKEN, transport=found.transport),
        )
        yield found


def corral(*args: str, columns: int = 80) -> Result:
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(cli, list(args))


def table(result: Result, width: int = 80) -> list[str]:
    assert result.exit_code == 0, (result.stderr, result.exception)
    lines = result.stdout.splitlines()
    assert lines and all(len(line) <= width for line in lines), result.stdout
    return lines


def error(result: Result) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.splitlines()
    return line


def test_tables_fit_80_columns_one_line_a_row(app: App) -> None:
    client = Client(URL, TOKEN, transport=app.transport)
    client.create_token("a-token-for-the-nightly-build-machine-in-the-basement", "submit")
    client.allow(hashlib.sha256(b"x").hexdigest(), "the program that builds everything " * 3)
    jobs = table(corral("ps"))
    assert len(jobs) == 4 and jobs[0].split()[:3] == ["id", "name", "status"]
    assert jobs[1].startswith("9a9a22222222 ") and "…" in jobs[3]  # newest first, name cut
    assert len(table(corral("ps", "3dce"))) == 3
    assert len(table(corral("workers"))) == 4
    assert len(table(corral("token", "list"))) == 3  # and the admin token
    assert len(table(corral("allow", "list"))) == 2
    audit = table(corral("audit"))
    assert len(audit) == 3 and "allow" in audit[1]  # newest first
    # a wider terminal shows more columns; --json is unchanged
    wide = table(corral("workers", columns=200), 200)
    assert "platform" in wide[0] and "platform" not in table(corral("workers"))[0]
    assert corral("ps", "--json").stdout.count(JOB_A) == 1


def test_prefixes_and_names_resolve(app: App) -> None:
    shown = corral("show", "3DCE")  # any case, 4 characters
    assert shown.exit_code == 0 and JOB_A in shown.stdout
    assert corral("show", "3dce000").exit_code == 0
    build = corral("show", "3dce/build")
    assert build.exit_code == 0 and "0001cccc" in build.stdout
    assert "0002cccc" in corral("show", "0002").stdout


def test_ambiguous_short_and_unknown_references(app: App) -> None:
    assert "too short" in error(corral("show", "3dc"))
    # a second job whose id starts 3dce: four characters are no longer enough
    on_loop(app, lambda s: s.create_job("3dce" + "9" * 28, "twin", "admin", 4.0, [task(9)]))
    line = error(corral("wait", "3dce"))
    assert "ambiguous" in line and "3dce00000000" in line and "3dce99999999 twin" in line
    assert corral("show", "3dce0").exit_code == 0
    assert "no job or task 0123" in error(corral("logs", "0123"))
    assert "no task named 'nope'" in error(corral("show", "3dce0/nope"))
    assert "JOB/TASKNAME" in error(corral("kill", "not-an-id"))


def finish(store: Store, n: int, outcome: Outcome) -> None:
    (leased,) = store.lease("w", 1, 5.0, 100.0, 100, job_id=None)
    assert leased.task_id.startswith(f"{n:04x}")
    assert store.finish(leased.task_id, leased.lease_id, outcome, 6.0)


def test_wait_prints_the_reason_of_each_failure(app: App) -> None:
    client = Client(URL, TOKEN, transport=app.transport)
    stderr = b"compiling\nerror: no such file\n\n"
    sha = hashlib.sha256(stderr).hexdigest()
    client.put_blob(sha, stderr)

    def run(store: Store) -> None:
        store.kill([f"{n:04x}" + "c" * 28 for n in (4, 5)], 1.0)  # job C: out of the way
        finish(store, 1, Outcome("failed", 3, None, None, sha, {}))
        refused = "not_allowed: /usr/bin/foo sha256:ab"
        finish(store, 2, Outcome("failed", None, refused, None, None, {}))
        memory = Outcome("failed", None, "limit_exceeded: memory", None, None, {})
        finish(store, 3, dataclasses.replace(memory, peak_memory=512 << 20))

    on_loop(app, run)
    waited = corral("wait", "3dce")
    assert waited.exit_code == 1
    assert "0001cccccccc failed: exit 3: error: no such file" in waited.stdout
    assert "0002cccccccc failed: not_allowed: /usr/bin/foo" in waited.stdout
    one = corral("wait", "0003")  # a task id: that task only
    assert one.exit_code == 1
    assert (
        one.stdout.strip() == "0003cccccccc failed: limit_exceeded: memory (peak 512 MB of 256 MB)"
    )
    why = corral("why", "3dce")
    assert "0001cccccccc failed (attempt 1 of 3): exit 3: error: no such file" in why.stdout


def test_logs_show_stdout_then_stderr_under_headers(app: App) -> None:
    client = Client(URL, TOKEN, transport=app.transport)
    blobs = {name: data for name, data in (("out", b"hello\n"), ("err", b"oops\n"))}
    shas = {n: hashlib.sha256(d).hexdigest() for n, d in blobs.items()}
    for n, d in blobs.items():
        client.put_blob(shas[n], d)
    on_loop(
        app, lambda s: finish(s, 1, Outcome("succeeded", 0, None, shas["out"], shas["err"], {}))
    )
    both = corral("logs", "3dce/build")
    assert both.stdout == (
        "==> stdout of task 0001cccccccc <==\nhello\n==> stderr of task 0001cccccccc <==\noops\n"
    )
    assert corral("logs", "--stderr", "0001").stdout == "oops\n"


def test_submit_warns_of_a_task_no_worker_could_run(app: App) -> None:
    def seen(store: Store) -> None:
        for i in range(3):
            store.touch_worker(f"{i:032x}", time.time(), "online", None)

    on_loop(app, seen)
    warned = corral("submit", "--requires", "cpus=2", "--", "true")
    assert warned.exit_code == 0
    assert "no worker has 2 slots for a task with cpus=2" in warned.stderr
    refused = corral("submit", "--strict", "--requires", "cpus=2", "--", "true")
    assert "not submitted" in error(refused)
    assert corral("submit", "--strict", "--", "true").stderr == ""


def test_ids_complete_from_the_coordinator(app: App) -> None:
    with Client(URL, TOKEN, transport=app.transport) as client:
        assert id_suggestions(client, "3DC") == [
            ("3dce00000000", f"job {LONG}"),
            ("3dcf11111111", "job second"),
        ]
        assert id_suggestions(client, "")[0] == ("9a9a22222222", "job third (queued)")
        assert id_suggestions(client, "zz") == []
