"""Dependencies and blocked tasks: the pure rules, then the API in process (issue 5)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from test_api import BASE, Api, check_error_shape, echo, run_api

from corral.coordinator.deps import (
    MAX_AFTER,
    hold,
    inputs_from_dependencies,
    named_dependencies,
    resolve_after,
    waiting_text,
)
from corral.protocol import AfterFile, InputRef, OutputFile, TaskSpec

# the pure rules


def test_resolve_after_turns_indexes_into_ids_and_dedupes() -> None:
    specs = [
        TaskSpec(argv=["a"]),
        TaskSpec(argv=["b"], after_index=[0]),
        TaskSpec(argv=["c"], after=["old", "old"], after_index=[0, 1, 0]),
    ]
    out = resolve_after(specs, ["ia", "ib", "ic"])
    assert out[0] is specs[0]
    assert (out[1].after, out[1].after_index) == (["ia"], [])
    assert out[2].after == ["old", "ia", "ib"]


@pytest.mark.parametrize("index", [1, 2, -1])
def test_resolve_after_refuses_indexes_that_do_not_point_backwards(index: int) -> None:
    specs = [TaskSpec(argv=["a"]), TaskSpec(argv=["b"], after_index=[index])]
    with pytest.raises(ValueError, match=r"tasks\[1\]\.after_index"):
        resolve_after(specs, ["x", "y"])


def test_resolve_after_caps_the_number_of_dependencies() -> None:
    specs = [TaskSpec(argv=["a"], after=[str(i) for i in range(MAX_AFTER + 1)])]
    with pytest.raises(ValueError, match="at most"):
        resolve_after(specs, ["x"])


def test_named_dependencies_are_those_outside_the_submission() -> None:
    specs = [TaskSpec(argv=["a"], after=["p", "q"]), TaskSpec(argv=["b"], after=["n0", "p"])]
    assert named_dependencies(specs, ["n0", "n1"]) == ["p", "q"]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], ("queued", 0)),
        (["succeeded", "succeeded"], ("queued", 0)),
        (["succeeded", "queued", "running"], ("queued", 2)),
        (["succeeded", "failed", "queued"], ("failed", 0)),
        (["killed"], ("failed", 0)),
    ],
)
def test_hold(statuses: list[str], expected: tuple[str, int]) -> None:
    assert hold(statuses) == expected


def test_waiting_text() -> None:
    assert waiting_text(1) == "waiting for 1 dependency"
    assert waiting_text(3) == "waiting for 3 dependencies"


# the API


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., None]:
    """serve(body, **settings): run `body(api)` against a fresh coordinator."""
    return functools.partial(run_api, tmp_path)


async def run_one(api: Api, worker: str, exit_code: int = 0) -> str:
    (a,) = await api.lease(worker)
    r = await api.result(a["task_id"], a["lease_id"], exit_code)
    assert r.status_code == 200, r.text
    return str(a["task_id"])


def test_after_index_holds_a_task_and_pending_reason_says_so(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        worker = await api.register()
        job = await api.submit(echo("a"), echo("b", after_index=[0]))
        a, b = (t["id"] for t in await api.tasks(job["id"]))
        held = await api.task(b)
        assert (held["status"], held["after"]) == ("queued", [a])
        assert held["pending_reason"] == "waiting for 1 dependency"
        assert await run_one(api, worker) == a
        assert await run_one(api, worker) == b

    serve(body)


def test_a_held_lease_wakes_when_a_dependency_succeeds(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        w1, w2 = await api.register("w1", 1), await api.register("w2", 1)
        job = await api.submit(echo("a"), echo("b", after_index=[0]))
        (a,) = await api.lease(w1)
        waiting = asyncio.create_task(api.lease(w2, wait=5.0))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await api.result(a["task_id"], a["lease_id"])
        (b,) = await asyncio.wait_for(waiting, 5.0)
        assert b["task_id"] == (await api.tasks(job["id"]))[1]["id"]

    serve(body)


def test_a_failing_dependency_propagates_through_the_api(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        worker = await api.register()
        job = await api.submit(echo("a"), echo("b", after_index=[0]), echo("c", after_index=[1]))
        await run_one(api, worker, exit_code=3)
        tasks = await api.tasks(job["id"])
        assert [(t["status"], t["error"]) for t in tasks[1:]] == [
            ("failed", "dependency_failed")
        ] * 2
        assert (await api.job(job["id"]))["status"] == "failed"

    serve(body)


def test_after_must_name_existing_tasks(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        detail = await api.refuse(
            422, "invalid_argument", "POST", "/jobs", json={"tasks": [echo(after=["f" * 32])]}
        )
        assert "no task" in detail
        for odd in ["a\x00b", "x" * 300]:
            tasks = [echo(after=[odd])]
            await api.refuse(422, "invalid_argument", "POST", "/jobs", json={"tasks": tasks})
        await api.refuse(
            422, "invalid_argument", "POST", "/jobs", json={"tasks": [echo(after_index=[0])]}
        )
        job = await api.submit(echo("a"))
        (a,) = await api.tasks(job["id"])
        other = await api.submit(echo("later", after=[a["id"]]))  # across jobs: fine
        r = await api.http.post(
            f"/jobs/{other['id']}/tasks", json={"tasks": [echo(after=["nope"])]}
        )
        assert (r.status_code, r.json()["error"]) == (422, "invalid_argument")
        assert (await api.job(other["id"]))["total"] == 1  # nothing was added

    serve(body)


def test_blocked_is_relayed_to_the_worker_and_frees_its_slot(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        worker = await api.register("w", 1)
        await api.submit(echo("parent"), echo("child"))
        (parent,) = await api.lease(worker)
        assert await api.lease(worker) == []  # one slot, taken
        job_token = parent["token"]
        async with httpx.AsyncClient(
            transport=api.transport,
            base_url=BASE,
            headers={"authorization": f"Bearer {job_token}"},
            event_hooks={"response": [check_error_shape]},
        ) as task_http:
            held = asyncio.create_task(
                api.http.post(
                    f"/workers/{worker}/heartbeat",
                    json={"leases": [parent["lease_id"]], "wait": 5.0},
                )
            )
            await asyncio.sleep(0.2)
            r = await task_http.post(f"/tasks/{parent['task_id']}/blocked", json={"blocked": True})
            assert r.status_code == 200, r.text
            reply = (await asyncio.wait_for(held, 2.0)).json()  # answered at once
            assert reply["blocked"] == [parent["task_id"]]
            (child,) = await api.lease(worker)  # the blocked parent's slot is free
            assert child["task_id"] != parent["task_id"]
            r = await task_http.post(f"/tasks/{parent['task_id']}/blocked", json={"blocked": False})
            assert r.status_code == 200
            r = await api.http.post(
                f"/workers/{worker}/heartbeat",
                json={"leases": [parent["lease_id"]], "wait": 5.0, "blocked": [parent["task_id"]]},
            )
            assert r.json()["blocked"] == []  # answered at once: the worker's view was stale
            r = await task_http.post(f"/tasks/{child['task_id']}/blocked", json={"blocked": True})
            assert r.status_code == 200  # any task of its own job
        await api.result(child["task_id"], child["lease_id"])
        await api.refuse(
            409, "conflict", "POST", f"/tasks/{child['task_id']}/blocked", json={"blocked": True}
        )

    serve(body)


def test_a_submit_token_may_not_mark_tasks_blocked(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        r = await api.http.post("/tokens", json={"name": "bob", "role": "submit"})
        assert r.status_code == 201, r.text
        secret = r.json()["secret"]
        async with httpx.AsyncClient(
            transport=api.transport, base_url=BASE, headers={"authorization": f"Bearer {secret}"}
        ) as bob:
            r = await bob.post("/tasks/x/blocked", json={"blocked": True})
            assert (r.status_code, r.json()["error"]) == (403, "forbidden")

    serve(body)


def test_after_inputs_must_name_a_dependency_and_a_safe_path() -> None:
    good = TaskSpec(argv=["a"], after=["d"], after_inputs={"in.pkl": AfterFile("d", "r.pkl")})
    assert resolve_after([good], ["x"])[0].after_inputs == good.after_inputs
    for name, task in [("in.pkl", "other"), ("../up", "d")]:
        bad = TaskSpec(argv=["a"], after=["d"], after_inputs={name: AfterFile(task, "r.pkl")})
        with pytest.raises(ValueError, match=r"tasks\[0\]\.after_inputs"):
            resolve_after([bad], ["x"])


def test_inputs_from_dependencies_stages_what_they_returned() -> None:
    spec = TaskSpec(
        argv=["a"],
        inputs={"own": InputRef("1" * 64, 1)},
        after=["d"],
        after_inputs={"in.pkl": AfterFile("d", "r.pkl"), "gone": AfterFile("d", "nope")},
    )
    out = inputs_from_dependencies(spec, {"d": {"r.pkl": OutputFile("2" * 64, 5, 0o600)}})
    assert out.inputs == {"own": InputRef("1" * 64, 1), "in.pkl": InputRef("2" * 64, 5, 0o600)}
    assert inputs_from_dependencies(TaskSpec(argv=["a"]), {}) == TaskSpec(argv=["a"])
