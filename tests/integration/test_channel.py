"""The WebSocket channel (issue 18) through real processes: workers whose leases, heartbeats
and results go over it, the same over plain HTTP, the socket lost mid-run, a stale result
sent over it, a kill reaching a worker through it, and tokens refused at the upgrade.

`GET /metrics` says what went over the channel (`corral_channel_calls_total`,
`corral_channels_open`): counted by the coordinator, not read from a log."""

from __future__ import annotations

import asyncio
import json
import operator
import re
import signal
import time
from collections.abc import Callable

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import corral
from corral.protocol import (
    Call,
    LeaseGrant,
    TaskResult,
    TaskSpec,
    WorkerResults,
    decode_answer,
    encode_frame,
)

from .conftest import Farm, is_gone, wait_for


def sh(script: str) -> TaskSpec:
    return TaskSpec(argv=["sh", "-c", script])


def metric(f: Farm, name: str) -> float:
    text = httpx.get(f.url + "/metrics", headers={"authorization": f"Bearer {f.token}"}).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def ws_url(f: Farm) -> str:
    return f.url.replace("http://", "ws://") + "/api/v1/channel"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["ws", "http"])
def test_a_farm_runs_jobs_over_the_channel_or_plain_http(
    farm: Callable[..., Farm], mode: str
) -> None:
    f = farm(workers=2, args=("--no-sandbox", "--channel", mode))
    client = f.client()
    job = client.submit_job([sh(f"echo {i}") for i in range(40)])
    assert f.wait_job(client, job.id, timeout=30).status == "succeeded"
    assert sorted(client.log(t.id)[0] for t in client.tasks(job.id)) == sorted(
        f"{i}\n".encode() for i in range(40)
    )
    calls = metric(f, "corral_channel_calls_total")
    if mode == "ws":
        assert metric(f, "corral_channels_open") == 2
        assert calls >= 40 / 8  # leases carrying results, heartbeats: at least a few
    else:
        assert metric(f, "corral_channels_open") == 0
        assert calls == 0


@pytest.mark.timeout(90)
def test_the_socket_lost_mid_run_loses_no_task_and_runs_none_twice(
    farm: Callable[..., Farm],
) -> None:
    f = farm(workers=2, lease_timeout=10.0, args=("--no-sandbox", "--channel", "ws"))
    client = f.client()
    n = 30
    job = client.submit_job([sh(f"sleep 0.2; echo {i}") for i in range(n)])

    def finished() -> int:
        return sum(t.status == "succeeded" for t in client.tasks(job.id))

    wait_for(lambda: finished() >= 5, 20, what="some tasks to finish")
    # every channel is cut mid-run: the coordinator goes and comes back
    assert f.stop_server(signal.SIGTERM) in (0, -signal.SIGTERM)
    time.sleep(0.5)
    f.start_server()
    client = f.client()
    done = f.wait_job(client, job.id, timeout=60)
    assert done.status == "succeeded", client.tasks(job.id)
    tasks = client.tasks(job.id)
    # each task ran once: a result lost with the socket and never recorded would have let
    # its lease run out and the task run again as attempt 2
    assert [t.attempts for t in tasks] == [1] * n
    assert sorted(client.log(t.id)[0] for t in tasks) == sorted(f"{i}\n".encode() for i in range(n))
    # the workers came back over a new channel, not HTTP
    wait_for(lambda: metric(f, "corral_channels_open") == 2, 15, what="channels reopened")
    assert metric(f, "corral_channel_calls_total") > 0


async def _call(ws: object, call_id: int, path: str, body: object) -> tuple[int, object]:
    await ws.send(encode_frame(Call(call_id, "POST", path, msgspec.json.encode(body))))  # type: ignore[attr-defined]
    answer = decode_answer(await ws.recv())  # type: ignore[attr-defined]
    assert answer.id == call_id
    return answer.status, json.loads(answer.body)


@pytest.mark.timeout(60)
def test_a_stale_result_over_the_channel_changes_nothing(farm: Callable[..., Farm]) -> None:
    f = farm(workers=0)
    client = f.client()
    job = client.submit_job([sh("true")])
    (task,) = client.tasks(job.id)

    async def run() -> None:
        headers = {"authorization": f"Bearer {f.token}"}
        async with connect(ws_url(f), additional_headers=headers) as ws:
            status, reg = await _call(ws, 1, "/workers", {"name": "hand", "slots": 1})
            assert status == 200
            wid = reg["id"]  # type: ignore[index]
            status, body = await _call(ws, 2, f"/workers/{wid}/lease", {"max": 1, "wait": 5})
            grant = msgspec.convert(body, LeaseGrant)
            (a,) = grant.assignments
            stale = TaskResult("not-" + a.lease_id, 0)
            status, body = await _call(
                ws, 3, f"/workers/{wid}/results", WorkerResults({a.task_id: stale})
            )
            assert status == 200 and body["stale"] == [a.task_id]  # type: ignore[index]
            status, body = await _call(ws, 4, f"/tasks/{a.task_id}/result", stale)
            assert status == 409 and body["error"] == "stale_lease"  # type: ignore[index]
            assert client.task(task.id).status == "running"  # nothing changed
            status, body = await _call(
                ws,
                5,
                f"/workers/{wid}/results",
                WorkerResults({a.task_id: TaskResult(a.lease_id, 0)}),
            )
            assert status == 200 and body["stale"] == []  # type: ignore[index]

    asyncio.run(run())
    assert client.task(task.id).status == "succeeded"


@pytest.mark.timeout(60)
def test_a_kill_reaches_a_worker_over_the_channel(farm: Callable[..., Farm]) -> None:
    f = farm(workers=1, args=("--no-sandbox", "--channel", "ws"))
    client = f.client()
    job = client.submit_job([sh("echo $$; exec sleep 300")])
    (task,) = client.tasks(job.id)
    out = wait_for(lambda: client.log(task.id)[0], 10, 0.1, "the task's pid")
    pid = int(out.split()[0])
    f.adopt(pid)
    client.kill(task.id)
    wait_for(lambda: is_gone(pid), 10, what="the killed task's process to end")
    assert client.task(task.id).status == "killed"
    after = client.submit_job([sh("echo after")])
    assert f.wait_job(client, after.id, timeout=10).status == "succeeded"
    assert metric(f, "corral_channels_open") == 1


@pytest.mark.timeout(60)
def test_a_bad_or_revoked_token_cannot_use_the_channel(farm: Callable[..., Farm]) -> None:
    f = farm(workers=0)
    admin = f.client()
    made = admin.create_token("w", "worker")

    async def refused(secret: str) -> tuple[int, dict[str, str]]:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(ws_url(f), additional_headers={"authorization": f"Bearer {secret}"}):
                pass
        response = caught.value.response
        return response.status_code, json.loads(response.body or b"{}")

    async def run() -> None:
        status, body = await refused("not-a-token")
        assert status == 401 and body["error"] == "unauthorized"
        with pytest.raises(InvalidStatus) as caught:
            async with connect(ws_url(f)):
                pass
        assert caught.value.response.status_code == 401
        headers = {"authorization": f"Bearer {made.secret}"}
        async with connect(ws_url(f), additional_headers=headers) as ws:
            status, _ = await _call(ws, 1, "/workers", {"name": "w", "slots": 1})
            assert status == 200
            admin.revoke_token(made.token.id)
            # the next call is refused like an HTTP request, and the channel closes
            status, body = await _call(ws, 2, "/workers", {"name": "w", "slots": 1})
            assert status == 401 and body["error"] == "unauthorized"  # type: ignore[index]
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        status, body = await refused(made.secret)
        assert status == 401 and "revoked" in body["detail"]

    asyncio.run(run())


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["ws", "http"])
def test_an_executor_submits_and_hears_its_events_over_the_channel_or_http(
    farm: Callable[..., Farm], mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the workers on HTTP: whatever goes over the channel is the client's
    f = farm(workers=2, args=("--no-sandbox", "--channel", "http"))
    monkeypatch.setenv("CORRAL_CHANNEL", mode)
    with corral.Executor(url=f.url, token=f.token) as ex:
        # functions by reference that every worker can import (this module is not on its path)
        assert [ex.submit(operator.mul, i, 2).result(timeout=30) for i in range(5)] == [
            0, 2, 4, 6, 8,
        ]  # fmt: skip
        assert list(ex.map(operator.neg, range(20), timeout=30)) == [-i for i in range(20)]
        open_now = metric(f, "corral_channels_open")
    calls = metric(f, "corral_channel_calls_total")
    if mode == "ws":
        # one channel; at least a submit and an event stream a batch went over it
        assert open_now == 1 and calls >= 2 * 6
    else:
        assert open_now == 0 and calls == 0


@pytest.mark.timeout(90)
def test_futures_outlive_the_channel_when_the_coordinator_restarts(
    farm: Callable[..., Farm], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = farm(workers=2, lease_timeout=10.0, args=("--no-sandbox",))
    monkeypatch.setenv("CORRAL_CHANNEL", "auto")
    with corral.Executor(url=f.url, token=f.token) as ex:
        assert ex.submit(operator.neg, 1).result(timeout=30) == -1  # the channel is open by now
        futures = [ex.submit(time.sleep, 1.5) for _ in range(4)]
        wait_for(lambda: any(fut.running() for fut in futures), 20, what="a task to start")
        assert f.stop_server(signal.SIGTERM) in (0, -signal.SIGTERM)
        time.sleep(0.5)
        f.start_server()
        assert [fut.result(timeout=60) for fut in futures] == [None] * 4
        assert ex.submit(operator.mul, 21, 2).result(timeout=30) == 42
