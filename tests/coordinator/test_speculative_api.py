"""Speculative jobs (issue 12) through the HTTP API, in process, on the real clock: a straggler
gets a backup lease on another worker, the first result wins, the loser is told to stop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_api import Api, echo, run_api

FAST = {"speculative_min_seconds": 0.2, "speculative_interval": 0.05}


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., None]:
    """serve(body, **settings): run `body(api)` against a fresh coordinator."""
    return functools.partial(run_api, tmp_path)


async def straggling(api: Api, n: int = 4) -> tuple[str, str, str, dict[str, Any]]:
    """A speculative job of `n` tasks of one phase, all leased by worker a; all but the last
    succeed at once; after the minimum time, worker b's held lease request gets a backup of
    the last one. Returns (a, b, job id, b's grant)."""
    r = await api.http.post(
        "/jobs", json={"tasks": [echo(name="phase") for _ in range(n)], "speculative": True}
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["speculative"] is True
    a = await api.register("a", slots=n)
    grants = await api.lease(a, max=n)
    assert len(grants) == n
    for g in grants[:-1]:
        assert (await api.result(g["task_id"], g["lease_id"])).status_code == 200
    b = await api.register("b", slots=1)
    (backup,) = await api.lease(b, wait=5.0)  # held: no event comes, the clock does it
    slow = grants[-1]
    assert backup["task_id"] == slow["task_id"] and backup["lease_id"] != slow["lease_id"]
    assert await api.lease(a, max=n) == []  # a runs it: no backup of its own task
    return a, b, job["id"], {"primary": slow, "backup": backup}


def test_a_straggler_gets_a_backup_and_the_first_result_wins(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        a, b, job_id, g = await straggling(api)
        task_id = g["backup"]["task_id"]
        assert await api.heartbeat(b, [g["backup"]["lease_id"]]) == []  # extended
        r = await api.result(task_id, g["backup"]["lease_id"])
        assert r.status_code == 200 and r.json()["worker_id"] == b
        r = await api.result(task_id, g["primary"]["lease_id"])
        assert (r.status_code, r.json()["error"]) == (409, "stale_lease")
        lease = g["primary"]["lease_id"]
        assert await api.heartbeat(a, [lease]) == [lease]  # a is told to stop it
        job = await api.job(job_id)
        assert (job["status"], job["counts"]["succeeded"]) == ("succeeded", 4)

    serve(body, **FAST)


def test_kill_stops_both_attempts(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        a, b, _, g = await straggling(api)
        held = asyncio.create_task(api.heartbeat(b, [g["backup"]["lease_id"]], wait=5.0))
        await asyncio.sleep(0.05)
        r = await api.http.post(f"/tasks/{g['backup']['task_id']}/kill")
        assert r.status_code == 200 and r.json()["status"] == "killed"
        assert await asyncio.wait_for(held, 2.0) == [g["backup"]["lease_id"]]  # woken at once
        assert await api.heartbeat(a, [g["primary"]["lease_id"]]) == [g["primary"]["lease_id"]]

    serve(body, **FAST)


def test_a_plain_job_gets_no_backups(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.submit(*[echo(name="phase") for _ in range(4)])
        a = await api.register("a", slots=4)
        grants = await api.lease(a, max=4)
        for g in grants[:-1]:
            await api.result(g["task_id"], g["lease_id"])
        b = await api.register("b", slots=1)
        await asyncio.sleep(0.3)
        assert await api.lease(b, wait=0.3) == []
        assert (await api.job((await api.job_ids())[0]))["speculative"] is False

    serve(body, **FAST)


def test_speculative_must_be_a_boolean(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        payload = {"tasks": [echo()], "speculative": "yes"}
        detail = await api.refuse(422, "invalid_body", "POST", "/jobs", json=payload)
        assert "speculative" in detail

    serve(body, **FAST)
