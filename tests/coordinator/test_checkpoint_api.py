"""Checkpoints (issue 14) through the HTTP API, in process: a worker records a running
task's save, the next lease restores it, a failure straight after restoring discredits it."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_api import Api, echo, run_api


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., None]:
    """serve(body, **settings): run `body(api)` against a fresh coordinator."""
    return functools.partial(run_api, tmp_path)


async def upload(api: Api, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    r = await api.http.put(f"/blobs/{sha}", content=data)
    assert r.status_code in (200, 201), r.text
    return {"sha256": sha, "size": len(data), "mode": 0o600}


async def save(api: Api, grant: dict[str, Any], data: bytes) -> Any:
    files = {"state": await upload(api, data)}
    return await api.http.post(
        f"/tasks/{grant['task_id']}/checkpoints",
        json={"lease_id": grant["lease_id"], "files": files},
    )


async def fail(api: Api, grant: dict[str, Any]) -> None:
    restored = (grant.get("checkpoint") or {}).get("n")
    body = {"lease_id": grant["lease_id"], "exit_code": 1, "restored": restored}
    r = await api.http.post(f"/tasks/{grant['task_id']}/result", json=body)
    assert r.status_code == 200, r.text


def test_a_saved_checkpoint_is_listed_and_restored_by_the_next_lease(
    serve: Callable[..., None],
) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo())
        w = await api.register("a", slots=1)
        (first,) = await api.lease(w)
        assert first.get("checkpoint") is None  # from scratch
        r = await save(api, first, b"step 1")
        assert (r.status_code, r.json()) == (200, {"n": 1})
        r = await api.http.get(f"/tasks/{first['task_id']}/checkpoints")
        (listed,) = r.json()
        assert (listed["n"], listed["attempt"], listed["size"], listed["files"]) == (1, 1, 6, 1)
        # the worker gives it back (drained, say): the next lease starts from the checkpoint
        r = await api.http.post(
            f"/tasks/{first['task_id']}/release", json={"lease_id": first["lease_id"]}
        )
        assert r.status_code == 200, r.text
        (again,) = await api.lease(w)
        ckpt = again["checkpoint"]
        assert ckpt["n"] == 1
        assert ckpt["files"]["state"]["sha256"] == hashlib.sha256(b"step 1").hexdigest()

    serve(body)


def test_a_save_is_refused_without_a_live_lease_or_its_blobs(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo())
        w = await api.register("a", slots=1)
        (grant,) = await api.lease(w)
        task = grant["task_id"]
        path = f"/tasks/{task}/checkpoints"
        missing = {"state": {"sha256": "c" * 64, "size": 1}}
        await api.refuse(422, "invalid_body", "POST", path, json={"lease_id": "x"})
        empty = {"lease_id": grant["lease_id"], "files": {}}
        await api.refuse(422, "invalid_argument", "POST", path, json=empty)
        body = {"lease_id": grant["lease_id"], "files": missing}
        await api.refuse(422, "invalid_argument", "POST", path, json=body)
        bad_path = {"../x": await upload(api, b"x")}
        body = {"lease_id": grant["lease_id"], "files": bad_path}
        await api.refuse(422, "invalid_argument", "POST", path, json=body)
        body = {"lease_id": "not-the-lease", "files": {"s": await upload(api, b"x")}}
        await api.refuse(409, "stale_lease", "POST", path, json=body)
        huge = {"sha256": "c" * 64, "size": 2**63 - 1}
        body = {"lease_id": grant["lease_id"], "files": {"a": huge, "b": huge}}
        await api.refuse(422, "invalid_argument", "POST", path, json=body)
        await api.refuse(404, "not_found", "GET", "/tasks/nope/checkpoints")
        assert (await api.http.get(path)).json() == []

    serve(body)


def test_a_corrupt_checkpoint_falls_back_to_the_one_before_then_to_scratch(
    serve: Callable[..., None],
) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo(retries=3))  # retried after 1, 2 and 4 s
        w = await api.register("a", slots=1)
        (grant,) = await api.lease(w)
        assert (await save(api, grant, b"one")).json() == {"n": 1}
        assert (await save(api, grant, b"two")).json() == {"n": 2}
        starts = []
        for _ in range(3):
            await fail(api, grant)  # each attempt fails straight after restoring
            (grant,) = await api.lease(w, wait=10.0)
            starts.append((grant.get("checkpoint") or {}).get("n"))
        assert starts == [2, 1, None]
        r = await api.http.get(f"/tasks/{grant['task_id']}/checkpoints")
        assert [(c["n"], c["bad"]) for c in r.json()] == [(1, True), (2, True)]

    serve(body)
