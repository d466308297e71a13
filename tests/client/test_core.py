"""The client's pure parts, without sockets: the sans-IO core, pickled calls and outcomes."""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import cloudpickle
import msgspec
import pytest

from corral.client import NotFoundError, RemoteTraceback, SerializationError, TaskFailed, TaskFuture
from corral.client import _core as core
from corral.client._functions import (
    CALL_FILE,
    FN_FILE,
    LARGE,
    PYTHON,
    RESULT_FILE,
    build_payload,
    decode_result,
    dump_function,
    function_spec,
)
from corral.client._outcomes import chunk_outcome, function_outcome
from corral.client._submission import Submission, dependency_ids, with_after
from corral.client._tasks import map_submissions
from corral.protocol import Task, TaskSpec
from corral.worker.pyrunner import run, runner_argv

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _task(status: str = "succeeded", **kw: Any) -> Task:
    base: dict[str, Any] = dict(
        id="t1", job_id="j1", seq=0, name="", status=status, argv=["x"], env={}, inputs={},
        outputs=[], requires={}, limits={}, shell=False, attempts=1, max_attempts=3,
        worker_id=None, exit_code=0, error=None, stdout=None, stderr=None, manifest={},
        created=0.0, started=None, finished=None,
    )  # fmt: skip
    base.update(kw)
    return Task(**base)


def drive(op: core.Op[Any], replies: dict[str, tuple[int, Any]]) -> tuple[Any, list[core.Call]]:
    """Run an operation against canned answers keyed by 'METHOD path'."""
    calls = []
    try:
        call = next(op)
        while True:
            calls.append(call)
            status, body = replies[f"{call.method} {call.path}"]
            content = body if isinstance(body, bytes) else msgspec.json.encode(body)
            call = op.send(core.Reply(status, {}, content))
    except StopIteration as stop:
        return stop.value, calls


NOT_FOUND = (404, {"error": "not_found", "detail": "no such thing"})


def test_find_falls_back_from_job_to_task_and_names_the_id_when_neither() -> None:
    task = _task()
    found, calls = drive(core.find("t1"), {"GET /jobs/t1": NOT_FOUND, "GET /tasks/t1": (200, task)})
    assert found == task and [c.path for c in calls] == ["/jobs/t1", "/tasks/t1"]
    with pytest.raises(NotFoundError, match="no job or task t9"):
        drive(core.find("t9"), {"GET /jobs/t9": NOT_FOUND, "GET /tasks/t9": NOT_FOUND})


def test_tasks_pages_until_a_short_page() -> None:
    pages = [[_task(id=f"t{i}") for i in range(n)] for n in (2, 2, 1)]
    op = core.tasks("j1", page=2)
    call = next(op)
    offsets = []
    try:
        for page in pages:
            offsets.append(call.params and call.params["offset"])
            call = op.send(core.Reply(200, {}, msgspec.json.encode(page)))
    except StopIteration as stop:
        assert [t.id for t in stop.value] == ["t0", "t1", "t0", "t1", "t0"]
    assert offsets == [0, 2, 4]


def test_errors_keep_code_and_detail_and_non_json_bodies_still_say_something() -> None:
    err = core.error_for(409, b'{"error": "stale_lease", "detail": "gone"}')
    assert err is not None and (err.status, err.code, err.detail) == (409, "stale_lease", "gone")
    odd = core.error_for(502, b"bad gateway")
    assert odd is not None and odd.code == "http_error" and odd.detail == "bad gateway"
    assert core.error_for(200, b"") is None


def test_upload_sends_only_what_the_coordinator_lacks(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("a")
    (tmp_path / "d" / "b").write_text("b")
    plan = core.plan_uploads([tmp_path / "d"])
    have, lack = sorted(plan.files)
    replies: dict[str, tuple[int, Any]] = {
        "POST /blobs/missing": (200, {"missing": [lack]}),
        f"PUT /blobs/{lack}": (201, {}),
    }
    refs, calls = drive(core.upload_plan(plan), replies)
    assert [c.method for c in calls] == ["POST", "PUT"] and calls[1].upload == plan.files[lack]
    assert set(refs[0]) == {"d/a", "d/b"}


def test_sse_decoder_yields_task_events_and_stops_at_end() -> None:
    event = {"seq": 7, "job_id": "j", "task_id": "t", "status": "running", "exit_code": None}
    data = msgspec.json.encode({**event, "time": 1.0}).decode()
    lines = [": keepalive", "", "id: 7", "event: task", f"data: {data}", ""]
    lines += ["event: end", "data: {}", "", "id: 8", "event: task", f"data: {data}", ""]
    got = list(core.parse_sse(lines))
    assert [(e.seq, e.status) for e in got] == [(7, "running")]
    assert core.events_call("j", 7).headers["last-event-id"] == "7"


def test_unpicklable_function_and_argument_fail_in_the_caller() -> None:
    lock = threading.Lock()
    with pytest.raises(SerializationError, match="cannot be pickled") as info:
        dump_function(lambda: lock)
    assert isinstance(info.value, TypeError)
    with pytest.raises(SerializationError, match="argument #1"):
        build_payload(dump_function(len), [((1, lock), {})], chunked=False)


def boom(x: int) -> int:
    if x == 2:
        raise KeyError(f"no {x}")
    return x * 10


def _run_payload(tmp_path: Path, payload: Any) -> tuple[bytes, int]:
    by_sha = payload.blobs
    for name, sha in payload.files.items():
        (tmp_path / name).write_bytes(by_sha[sha])
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)  # argument files are named relative to the task directory
        return run(tmp_path / FN_FILE, tmp_path / CALL_FILE)
    finally:
        os.chdir(cwd)


def test_a_call_round_trips_through_the_runner_with_large_arguments_as_files(
    tmp_path: Path,
) -> None:
    big = bytes(range(256)) * (LARGE // 256 + 1)
    payload = build_payload(dump_function(len), [((big,), {})], chunked=False)
    assert any(n.startswith("corral-arg-") for n in payload.files)
    twice = build_payload(dump_function(len), [((big,), {})], chunked=False)
    assert payload.files == twice.files  # the same bytes: one content address, one upload
    record, code = _run_payload(tmp_path, payload)
    assert code == 0 and decode_result(record, _task()).value == len(big)


def test_a_remote_exception_comes_back_as_itself_with_its_traceback(tmp_path: Path) -> None:
    payload = build_payload(dump_function(boom), [((2,), {})], chunked=False)
    record, code = _run_payload(tmp_path, payload)
    assert code == 1
    outcome = decode_result(record, _task(status="failed"))
    assert isinstance(outcome.error, KeyError)
    assert isinstance(outcome.error.__cause__, RemoteTraceback)
    assert "in boom" in str(outcome.error.__cause__) and "KeyError" in outcome.error.__cause__.tb
    assert any("task t1" in n for n in outcome.error.__notes__)


def test_a_chunk_settles_items_before_the_failure_and_the_failure_at_its_place(
    tmp_path: Path,
) -> None:
    payload = build_payload(dump_function(boom), [((i,), {}) for i in range(4)], chunked=True)
    record, _ = _run_payload(tmp_path, payload)
    settled = chunk_outcome(4)(_task(status="failed"), record)
    assert settled[:2] == [(True, 0), (True, 10)]
    assert settled[2][0] is False and isinstance(settled[2][1], KeyError)
    assert settled[3][0] is False and "not run" in str(settled[3][1])


def test_no_result_file_means_task_failed() -> None:
    ((ok, err),) = function_outcome(_task(status="killed", error="killed"), None)
    assert not ok and isinstance(err, TaskFailed) and "killed" in str(err)


def test_function_spec_requires_this_python_and_runs_the_runner() -> None:
    payload = build_payload(dump_function(len), [(([1],), {})], chunked=False)
    spec = function_spec(payload, {"requires": {"os": "linux"}}, "len")
    assert spec.requires == {"python": PYTHON, "os": "linux"}
    assert spec.argv[:3] == ["python3", "-m", "corral.worker.pyrunner"]
    assert spec.outputs == [RESULT_FILE]
    assert runner_argv(spec.argv, "/opt/py")[0] == "/opt/py"
    assert runner_argv(["python3", "x.py"], "/opt/py") == ["python3", "x.py"]
    assert pickle.loads(payload.blobs[payload.files[CALL_FILE]])["v"] == 1


def test_map_chunks_items_and_gives_one_future_each() -> None:
    subs, futures = map_submissions(boom, [range(5)], 2, {}, TaskFuture)
    assert len(subs) == 3 and len(futures) == 5
    assert [len(s.futures) for s in subs] == [2, 2, 1]
    assert all(isinstance(f, concurrent.futures.Future) for f in futures)


def test_dependencies_wait_for_ids_and_land_in_the_spec() -> None:
    f = TaskFuture()
    assert dependency_ids(["a", f]) is None
    f.task_id = "b"
    assert dependency_ids(["a", f]) == ["a", "b"]
    spec = TaskSpec(argv=["x"])
    assert with_after(spec, []) is spec
    assert with_after(spec, ["a", "b"]).after == ["a", "b"]


def test_a_submission_does_not_overwrite_a_cancelled_future() -> None:
    f, g = TaskFuture(), TaskFuture()
    sub = Submission(TaskSpec(argv=["x"]), [f, g], function_outcome)
    assert f.cancel()
    sub.started()
    assert g.running() and not sub.cancelled()
    sub.settle([(True, 1), (True, 2)])
    assert f.cancelled() and g.result() == 2
