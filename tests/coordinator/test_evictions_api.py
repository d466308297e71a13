"""Evictions (issue 14) through the HTTP API, in process: `kill --checkpoint` and `drain
--evict` reach the worker in its heartbeat reply, its give-back then kills or requeues the
task, and `retry` with `killed` resumes a killed task from its checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_api import BASE, TOKEN, Api, echo, run_api
from test_checkpoint_api import save
from test_store_contract import Backend, require_postgres

from corral.coordinator import Settings, build_app
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.stops import released_error
from corral.protocol import ReleaseReason


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., None]:
    """serve(body, **settings): run `body(api)` against a fresh coordinator."""
    return functools.partial(run_api, tmp_path)


async def beat(api: Api, worker: str, lease: str, **kw: Any) -> dict[str, Any]:
    r = await api.http.post(f"/workers/{worker}/heartbeat", json={"leases": [lease], **kw})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def give_back(api: Api, grant: dict[str, Any], reason: str) -> dict[str, Any]:
    r = await api.http.post(
        f"/tasks/{grant['task_id']}/release",
        json={"lease_id": grant["lease_id"], "reason": reason},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_kill_with_checkpoint_evicts_then_kills_and_retry_resumes(
    serve: Callable[..., None],
) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo(), echo())
        w = await api.register("a", slots=1)
        (grant,) = await api.lease(w)
        queued = next(t for t in job["task_ids"] if t != grant["task_id"])
        r = await api.http.post(f"/jobs/{job['id']}/kill", json={"checkpoint": True})
        assert r.status_code == 200, r.text
        assert (await api.task(queued))["status"] == "killed"  # nothing to save: at once
        assert (await api.task(grant["task_id"]))["status"] == "running"  # until given back

        reply = await beat(api, w, grant["lease_id"])
        assert (reply["evict"], reply["cancel"]) == ([grant["lease_id"]], [])
        assert (await save(api, grant, b"at step 7")).status_code == 200  # its lease is live
        done = await give_back(api, grant, "evicted")
        assert (done["status"], done["error"]) == ("killed", "killed")
        assert (await api.job(job["id"]))["status"] == "killed"

        r = await api.http.post(f"/jobs/{job['id']}/retry")  # failed ones only: none
        assert r.json()["status"] == "killed"
        r = await api.http.post(f"/jobs/{job['id']}/retry", json={"killed": True})
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
        again = {a["task_id"]: a for a in await api.lease(w, max=2)}
        assert again[grant["task_id"]]["checkpoint"]["n"] == 1  # resumes from the eviction's
        assert again[grant["task_id"]]["attempt"] == 2

    serve(body)


def test_drain_with_evict_requeues_without_counting_the_attempt(
    serve: Callable[..., None],
) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo())
        w = await api.register("a", slots=1)
        (grant,) = await api.lease(w)
        r = await api.http.post(f"/workers/{w}/drain", json={"evict": True})
        assert r.status_code == 200 and r.json()["status"] == "draining", r.text
        reply = await beat(api, w, grant["lease_id"], draining=True)
        assert (reply["drain"], reply["evict"]) == (True, [grant["lease_id"]])
        done = await give_back(api, grant, "evicted")
        assert (done["status"], done["attempts"]) == ("queued", 0)
        assert done["error"] == released_error("evicted")
        assert (await beat(api, w, grant["lease_id"], draining=True))["evict"] == []

    serve(body)


def test_a_plain_drain_evicts_nothing(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo())
        w = await api.register("a", slots=1)
        (grant,) = await api.lease(w)
        assert (await api.http.post(f"/workers/{w}/drain")).status_code == 200
        reply = await beat(api, w, grant["lease_id"], draining=True)
        assert (reply["drain"], reply["evict"]) == (True, [])

    serve(body)


def test_an_eviction_wakes_a_held_heartbeat_and_a_known_one_is_held(
    serve: Callable[..., None],
) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo())
        w = await api.register("a", slots=1)
        (grant,) = await api.lease(w)
        held = asyncio.create_task(beat(api, w, grant["lease_id"], wait=3.0))
        await asyncio.sleep(0.2)
        assert not held.done()
        start = time.monotonic()
        r = await api.http.post(f"/tasks/{job['task_ids'][0]}/kill", json={"checkpoint": True})
        assert r.status_code == 200 and r.json()["status"] == "running", r.text
        assert (await held)["evict"] == [grant["lease_id"]]
        assert time.monotonic() - start < 2.0
        # a worker that says it knows of the eviction is not answered at once (no spin)
        start = time.monotonic()
        await beat(api, w, grant["lease_id"], wait=0.5, evicting=[grant["lease_id"]])
        assert time.monotonic() - start >= 0.4

    serve(body, heartbeat_interval=0.5)


def test_release_reasons_say_why_and_bad_options_are_refused(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo())
        task_id = job["task_ids"][0]
        w = await api.register("a", slots=1)
        (grant,) = await api.lease(w)
        for path, bad in [
            (f"/tasks/{task_id}/kill", {"checkpoint": "yes"}),
            (f"/jobs/{job['id']}/kill", {"checkpint": True}),
            (f"/jobs/{job['id']}/retry", {"killed": 1}),
            (f"/workers/{w}/drain", {"evict": None}),
            (f"/tasks/{task_id}/release", {"lease_id": grant["lease_id"], "reason": "bored"}),
        ]:
            await api.refuse(422, "invalid_body", "POST", path, json=bad)
        await api.refuse(404, "not_found", "POST", "/tasks/nope/kill", json={"checkpoint": True})
        await api.refuse(404, "not_found", "POST", "/workers/nope/drain", json={"evict": True})
        await api.refuse(404, "not_found", "POST", "/jobs/nope/retry", json={"killed": True})
        done = await give_back(api, grant, "shutdown")
        assert done["error"] == released_error("shutdown")
        assert "the worker shut down; checkpoint saved" in done["error"]

    serve(body)


def test_released_errors_all_say_given_back() -> None:
    for reason in typing.get_args(ReleaseReason):
        assert released_error(reason).startswith("given back by its worker (")


def test_an_eviction_asked_on_one_coordinator_reaches_a_heartbeat_held_on_another(
    tmp_path: Path,
) -> None:
    """Two coordinators on one PostgreSQL database: `kill --checkpoint` on A answers the
    worker's heartbeat held on B (its announcement, or B's periodic re-check)."""
    require_postgres()
    backend = Backend("postgres", tmp_path)

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = []
            for name in ("a", "b"):
                settings = Settings(data_dir=tmp_path / name, tokens={TOKEN: "alice"})
                app = build_app(settings, backend.open(), LocalBlobs(tmp_path / "blobs"))
                await stack.enter_async_context(app.router.lifespan_context(app))
                http = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url=BASE,
                    headers={"authorization": f"Bearer {TOKEN}"},
                )
                clients.append(await stack.enter_async_context(http))
            a, b = clients
            job = (await a.post("/jobs", json={"tasks": [echo()]})).json()
            w = (await a.post("/workers", json={"name": "w", "slots": 1})).json()["id"]
            (grant,) = (await a.post(f"/workers/{w}/lease", json={"max": 1})).json()["assignments"]
            beat = {"leases": [grant["lease_id"]], "wait": 4.0}
            held = asyncio.create_task(b.post(f"/workers/{w}/heartbeat", json=beat))
            await asyncio.sleep(0.3)
            assert not held.done()
            start = time.monotonic()
            r = await a.post(f"/tasks/{job['task_ids'][0]}/kill", json={"checkpoint": True})
            assert r.status_code == 200, r.text
            reply = (await asyncio.wait_for(held, 10)).json()
            assert reply["evict"] == [grant["lease_id"]] and time.monotonic() - start < 3.0

    try:
        asyncio.run(main())
    finally:
        backend.close()
