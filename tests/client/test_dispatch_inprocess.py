"""The dispatcher and the futures, in process: no sockets, no worker processes.

Clients talk to `build_app` over an in-process transport (tests/client/inprocess.py) and a
`FakeWorker` leases and runs their tasks over the same API in the test's thread, with the
real function runner, so each step of a future's life happens when the test says.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
import pytest

from corral import AsyncClient, Client, Executor
from corral.client import CorralError, RemoteTraceback, TaskFailed
from corral.protocol import INLINE_MAX, TaskSpec

from .inprocess import BOUND, TOKEN, URL, App, FakeWorker, sha

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(60)


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise LookupError(message)


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise KeyError(f"refusing {x}")
    return x


def large(n: int) -> bytes:
    return b"x" * n


def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait until `check()` holds; fail after BOUND seconds."""
    deadline = time.monotonic() + BOUND
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    """A coordinator in this process."""
    with App(tmp_path) as found:
        yield found


@pytest.fixture
def client(app: App) -> Iterator[Client]:
    """A Client on the in-process coordinator."""
    with Client(URL, TOKEN, transport=app.transport) as c:
        yield c


@pytest.fixture
def worker(app: App) -> Iterator[FakeWorker]:
    """A fake worker with eight slots."""
    with FakeWorker(app) as w:
        yield w


def settled_from_events(app: App) -> bool:
    """The clients asked for no task and no blob: their futures settled from events alone."""
    asked = app.transport.requests
    return not [r for r in asked if r.startswith(("GET /api/v1/tasks/", "GET /api/v1/blobs/"))]


# Client: futures settled by the background thread


def test_submit_and_map_settle_with_the_values_from_the_event_stream(
    app: App, client: Client, worker: FakeWorker
) -> None:
    one = client.submit(square, 7)
    many = client.map(square, range(5), chunksize=2)
    worker.run_all(4)
    assert one.result(BOUND) == 49
    assert [f.result(BOUND) for f in many] == [0, 1, 4, 9, 16]
    assert settled_from_events(app)
    assert one.task_id and one.job_id
    assert client.task(one.task_id).status == "succeeded"


def test_one_submit_costs_the_client_a_submission_and_its_event_stream(
    app: App, client: Client, worker: FakeWorker
) -> None:
    future = client.submit(square, 3)
    worker.run_all(1)
    assert future.result(BOUND) == 9
    client.close()  # its follower has ended
    asked = [r for r in app.transport.requests if "/workers" not in r and "/lease" not in r]
    job = future.job_id
    # no question after the stream: once every future is settled, how the job ends is moot
    assert asked == ["POST /api/v1/jobs", f"GET /api/v1/jobs/{job}/events"], asked


def test_a_remote_exception_is_raised_as_itself_with_its_traceback(
    client: Client, worker: FakeWorker
) -> None:
    future = client.submit(fail, "nope")
    worker.run_all(1)
    exc = future.exception(BOUND)
    assert isinstance(exc, LookupError) and str(exc) == "nope"
    assert isinstance(exc.__cause__, RemoteTraceback)
    with pytest.raises(LookupError, match="nope"):
        future.result()


def test_a_chunk_settles_each_item_and_the_items_after_a_failure_were_not_run(
    client: Client, worker: FakeWorker
) -> None:
    futures = client.map(fail_on, range(4), [1] * 4, chunksize=4)
    worker.run_all(1)
    assert futures[0].result(BOUND) == 0
    assert isinstance(futures[1].exception(BOUND), KeyError)
    for f in futures[2:]:
        with pytest.raises(CorralError, match="not run"):
            f.result(BOUND)


def test_a_result_too_large_for_the_event_is_fetched_on_its_own(
    app: App, client: Client, worker: FakeWorker
) -> None:
    future = client.submit(large, INLINE_MAX + 1)
    (task,) = worker.run_all(1)
    assert future.result(BOUND) == b"x" * (INLINE_MAX + 1)
    result = task.manifest["corral-result.pkl"].sha256
    assert f"GET /api/v1/blobs/{result}" in app.transport.requests


def test_a_command_future_gets_its_task_or_task_failed_with_the_end_of_stderr(
    client: Client, worker: FakeWorker, tmp_path: Path
) -> None:
    data = tmp_path / "in.txt"
    data.write_text("hello")
    ok = client.submit_command(["cat", "in.txt"], inputs=[data], env={"X": "1"})
    (grant,) = worker.lease()
    assert grant.spec.argv == ["cat", "in.txt"] and grant.spec.env == {"X": "1"}
    staged = grant.spec.inputs["in.txt"].sha256
    assert staged == sha(b"hello")
    assert worker.http.get(f"/blobs/{staged}").content == b"hello"  # uploaded when sent
    worker.report(grant, 0)
    assert ok.result(BOUND).status == "succeeded"

    bad = client.submit_command(["sh", "-c", "exit 3"])
    (grant,) = worker.lease()
    worker.report(grant, 3, stderr=b"why it failed\n")
    with pytest.raises(TaskFailed, match="exit code 3") as info:
        bad.result(BOUND)
    assert any("why it failed" in note for note in info.value.__notes__)


def test_a_running_future_cannot_be_cancelled(client: Client, worker: FakeWorker) -> None:
    future = client.submit(square, 3)
    (grant,) = worker.lease()
    eventually(future.running, "the running event")
    assert not future.cancel()
    worker.run(grant)
    assert future.result(BOUND) == 9


def test_a_queued_future_cancelled_kills_its_task_on_the_farm(
    client: Client, worker: FakeWorker
) -> None:
    future = client.submit(square, 3)
    eventually(lambda: future.task_id is not None, "the submit")
    assert future.cancel() and future.cancelled()
    assert future.task_id is not None
    task_id = future.task_id
    eventually(lambda: client.task(task_id).status == "killed", "the kill")
    assert worker.lease(wait=0.1) == []


def test_futures_as_arguments_and_after_hold_tasks_until_their_dependencies_succeed(
    client: Client, worker: FakeWorker
) -> None:
    first = client.submit(square, 3)
    second = client.submit(add, first, 1)
    eventually(lambda: second.task_id is not None, "the submit")
    (grant,) = worker.lease(2)  # the other is held
    assert grant.task_id == first.task_id
    command = client.submit_command(["true"], after=[second])
    worker.run(grant)
    (grant,) = worker.lease()
    assert grant.task_id == second.task_id
    worker.run(grant)
    assert second.result(BOUND) == 10
    (grant,) = worker.lease()
    assert grant.spec.after == [second.task_id]
    worker.report(grant, 0)
    assert command.result(BOUND).status == "succeeded"


def test_a_failed_dependency_fails_the_tasks_waiting_for_it(
    client: Client, worker: FakeWorker
) -> None:
    first = client.submit(fail, "no")
    second = client.submit(add, first, 1)
    worker.run_all(1)
    assert isinstance(first.exception(BOUND), LookupError)
    assert isinstance(second.exception(BOUND), TaskFailed)


def test_as_completed_over_futures_and_over_a_job(client: Client, worker: FakeWorker) -> None:
    futures = [client.submit(square, i) for i in range(3)]
    worker.run_all(3)
    done = concurrent.futures.as_completed(futures, timeout=BOUND)
    assert sorted(f.result() for f in done) == [0, 1, 4]
    job = client.submit_job([TaskSpec(argv=["true"]) for _ in range(2)])
    for grant in worker.lease(2):
        worker.report(grant, 0)
    finished = list(client.as_completed(job))
    assert sorted(t.id for t in finished) == sorted(t.id for t in client.tasks(job.id))
    events = list(client.events(job.id, detail=True))
    assert {e.task.status for e in events if e.task is not None} == {"succeeded"}


def test_closing_the_client_fails_the_futures_still_open(app: App) -> None:
    client = Client(URL, TOKEN, transport=app.transport)
    future = client.submit(square, 2)
    eventually(lambda: future.task_id is not None, "the submit")
    client.close()
    with pytest.raises(CorralError, match="closed before"):
        future.result(BOUND)


def test_an_executor_runs_on_a_client_with_a_transport(client: Client, worker: FakeWorker) -> None:
    executor = Executor(client)
    results = executor.map(square, range(4), chunksize=2)
    worker.run_all(2)
    assert list(results) == [0, 1, 4, 9]
    executor.shutdown()


class SyncOnly(httpx.BaseTransport):
    """A transport a sync client can use and an event loop cannot."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.inner.handle_request(request)


def test_futures_need_a_transport_an_event_loop_can_use(app: App) -> None:
    with Client(URL, TOKEN, transport=SyncOnly(app.transport)) as client:
        assert client.jobs() == []
        with pytest.raises(TypeError, match="AsyncBaseTransport"):
            client.submit(square, 2)


# AsyncClient: futures settled in the caller's loop


def run_async(app: App, body: Callable[[AsyncClient], Any]) -> None:
    """Run `body(client)` in a fresh event loop with an AsyncClient on `app`."""

    async def main() -> None:
        async with AsyncClient(URL, TOKEN, transport=app.transport) as client:
            await asyncio.wait_for(body(client), BOUND * 3)

    asyncio.run(main())


def test_async_futures_submit_map_raise_and_batch(app: App, worker: FakeWorker) -> None:
    async def body(client: AsyncClient) -> None:
        one = client.submit(square, 7)
        many = client.map(square, range(4))
        failing = client.submit_with({"max_attempts": 1}, fail, "nope")
        await asyncio.to_thread(worker.run_all, 6)
        assert await one == 49
        assert await asyncio.gather(*many) == [0, 1, 4, 9]
        with pytest.raises(LookupError, match="nope"):
            await failing
        # submitted before the loop ran the dispatcher: one batch, one job
        assert len({f.job_id for f in [one, *many, failing]}) == 1

    run_async(app, body)
    assert settled_from_events(app)


def test_async_cancel_before_sending_submits_nothing_and_after_kills(
    app: App, worker: FakeWorker
) -> None:
    async def body(client: AsyncClient) -> None:
        never = client.submit(square, 1)
        assert never.cancel()
        queued = client.submit(square, 2)
        while queued.task_id is None:
            await asyncio.sleep(0.01)
        assert [len(await client.tasks(j.id)) for j in await client.jobs()] == [1]
        assert queued.cancel()
        task_id = queued.task_id
        while (await client.task(task_id)).status != "killed":
            await asyncio.sleep(0.01)
        assert await asyncio.to_thread(worker.lease, 1, 0.1) == []

    run_async(app, body)


def test_async_as_completed_and_commands(app: App, worker: FakeWorker) -> None:
    async def body(client: AsyncClient) -> None:
        job = await client.submit_job([TaskSpec(argv=["true"]) for _ in range(2)])
        command = client.submit_command(["false"])
        while command.task_id is None:
            await asyncio.sleep(0.01)
        grants = await asyncio.to_thread(worker.lease, 3)
        assert len(grants) == 3
        for grant in grants:
            await asyncio.to_thread(worker.report, grant, 1 if grant.spec.argv == ["false"] else 0)
        seen = [t.id async for t in client.as_completed(job)]
        assert sorted(seen) == sorted(t.id for t in await client.tasks(job.id))
        with pytest.raises(TaskFailed, match="exit code 1"):
            await command

    run_async(app, body)


# the methods AsyncClient has in common with Client now


def test_async_client_uploads_allows_and_manages_tokens(app: App, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a")
    (tmp_path / "b.bin").write_bytes(b"b")

    async def body(client: AsyncClient) -> None:
        refs = await client.upload([tmp_path / "d"])
        assert set(refs) == {"d/a.txt"}
        assert await client.read_blob(refs["d/a.txt"].sha256) == b"a"
        await client.put_blob(sha(b"b"), tmp_path / "b.bin")
        assert await client.read_blob(sha(b"b")) == b"b"

        entry = await client.allow(sha(b"b"), "a test")
        assert entry.note == "a test"
        assert [e.sha256 for e in await client.allowed()] == [sha(b"b")]
        await client.disallow(sha(b"b"))
        assert await client.allowed() == []

        made = await client.create_token("ci", "submit")
        assert made.secret and made.token.role == "submit"
        assert made.token.id in [t.id for t in await client.tokens()]
        assert (await client.revoke_token(made.token.id)).revoked is not None
        actions = [e.action for e in await client.audit()]
        assert "token.create" in actions and "token.revoke" in actions

    run_async(app, body)


def test_adding_tasks_to_a_job_and_marking_a_task_blocked(
    client: Client, worker: FakeWorker
) -> None:
    job = client.submit_job([TaskSpec(argv=["parent"])])
    (grant,) = worker.lease()
    (child,) = client.add_tasks(job.id, [TaskSpec(argv=["child"])])
    assert child.job_id == job.id and [t.id for t in client.tasks(job.id)][-1] == child.id
    assert client.set_blocked(grant.task_id, True).id == grant.task_id
    assert client.set_blocked(grant.task_id, False).status == "running"


def test_as_job_sends_its_block_as_one_job_even_across_dependencies(
    client: Client, worker: FakeWorker
) -> None:
    with client.as_job("grouped") as group:
        first = client.submit(square, 3)
        second = client.submit(add, first, 1)  # sent in a second request, into the same job
        many = client.map(square, range(3))
        assert first.task_id is None  # nothing leaves before the block ends
    worker.run_all(5)
    assert second.result(BOUND) == 10
    assert [f.result(BOUND) for f in many] == [0, 1, 4]
    assert group.job_id is not None
    assert {first.job_id, second.job_id, *(f.job_id for f in many)} == {group.job_id}
    job = client.job(group.job_id)
    assert (job.name, job.total) == ("grouped", 5)


def test_an_as_job_block_that_raises_submits_nothing(app: App, client: Client) -> None:
    with pytest.raises(KeyError), client.as_job("broken"):
        future = client.submit(square, 3)
        raise KeyError("boom")
    assert "not submitted" in str(future.exception(BOUND))
    assert client.jobs() == []
    with pytest.raises(RuntimeError, match="do not nest"), client.as_job(), client.as_job():
        pass


def test_large_inputs_split_a_batch_so_the_first_tasks_go_out_before_the_rest_is_sent(
    app: App, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import corral.client._dispatch as dispatch

    monkeypatch.setattr(dispatch, "MAX_BATCH_BYTES", 10)
    files = []
    for i in range(3):
        files.append(tmp_path / f"in{i}.txt")
        files[-1].write_text(f"input {i}!")  # 9 bytes: two files exceed the cap
    with client.as_job("split") as group:
        futures = [client.submit_command(["cat", f.name], inputs=[f]) for f in files]
    eventually(lambda: all(f.task_id for f in futures), "the submits")
    posts = [r for r in app.transport.requests if r.startswith("POST /api/v1/jobs")]
    assert posts == ["POST /api/v1/jobs"] + [f"POST /api/v1/jobs/{group.job_id}/tasks"] * 2
    assert client.job(str(group.job_id)).total == 3
