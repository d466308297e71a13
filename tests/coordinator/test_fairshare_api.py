"""Fair share and priorities through the HTTP API, in process: tokens carry their owner's
share and cap, a queued task's `pending_reason` says when fair share holds it, and bad
priorities and shares are refused with 4xx JSON, creating nothing."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_api import Api, run_api


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., None]:
    """serve(body, **settings): run `body(api)` against a fresh coordinator."""
    return functools.partial(run_api, tmp_path)


async def make_token(api: Api, name: str, **fields: Any) -> dict[str, str]:
    r = await api.http.post("/tokens", json={"name": name, "role": "submit", **fields})
    assert r.status_code == 201, r.text
    return {"authorization": f"Bearer {r.json()['secret']}"}


async def submit_as(api: Api, who: dict[str, str], n: int, **job: Any) -> dict[str, Any]:
    tasks = [{"argv": ["true"]} for _ in range(n)]
    r = await api.http.post("/jobs", json={"tasks": tasks, **job}, headers=who)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_tokens_show_their_owners_share_and_cap(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await make_token(api, "alice", share=2.0, max_slots=3)
        await make_token(api, "alice-laptop", owner="alice")  # keeps alice's share and cap
        await make_token(api, "bob")
        listed = {t["name"]: t for t in (await api.http.get("/tokens")).json()}
        assert (listed["alice"]["share"], listed["alice"]["max_slots"]) == (2.0, 3)
        assert (listed["alice-laptop"]["share"], listed["alice-laptop"]["max_slots"]) == (2.0, 3)
        assert (listed["bob"]["share"], listed["bob"].get("max_slots")) == (1.0, None)

    serve(body)


def test_why_says_when_fair_share_holds_a_task(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        alice = await make_token(api, "alice")
        bob = await make_token(api, "bob")
        job = await submit_as(api, alice, 4)
        worker = await api.register(slots=2)
        assert len(await api.lease(worker, max=2)) == 2  # alice's, running: her usage grows
        await submit_as(api, bob, 2)
        waiting = (await api.http.get(f"/tasks/{job['task_ids'][3]}")).json()
        reason = waiting["pending_reason"]
        assert reason.startswith("alice has used 100% of the farm in the last hour"), reason
        assert "bob's tasks go first; all 2 matching slots are busy" in reason, reason

    serve(body)


def test_a_higher_priority_job_goes_first_within_its_owner(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        alice = await make_token(api, "alice")
        await submit_as(api, alice, 3)
        urgent = await submit_as(api, alice, 2, priority=10)
        assert urgent["priority"] == 10
        worker = await api.register(slots=2)
        got = await api.lease(worker, max=2)
        assert {a["task_id"] for a in got} == set(urgent["task_ids"])

    serve(body)


def test_bad_priorities_and_shares_are_refused_creating_nothing(
    serve: Callable[..., None],
) -> None:
    async def body(api: Api) -> None:
        before = (await api.http.get("/tokens")).json()
        for fields in ({"share": -1}, {"share": "abc"}, {"max_slots": -1}):
            r = await api.http.post("/tokens", json={"name": "x", "role": "submit", **fields})
            assert r.status_code == 422, r.text
            assert r.json()["error"] in ("invalid_argument", "invalid_body"), r.text
        assert (await api.http.get("/tokens")).json() == before
        for job in (
            {"tasks": [{"argv": ["true"]}], "priority": "abc"},
            {"tasks": [{"argv": ["true"], "priority": 1.5}]},
        ):
            r = await api.http.post("/jobs", json=job)
            assert r.status_code == 422, r.text
        assert (await api.http.get("/jobs")).json() == []

    serve(body)
