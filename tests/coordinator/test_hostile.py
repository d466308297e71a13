"""Hostile input on every endpoint that takes a path, a name or a body: always a 4xx with the
error shape, and nothing is created or lost. In process (httpx over ASGI)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from corral.coordinator import Settings, build_app
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.routes import ENDPOINTS
from corral.coordinator.store import SQLiteStore
from corral.protocol import ERROR_STATUS

TOKEN = "hostile-test-token"
HOSTILE = [
    "/etc/passwd",  # absolute
    "..",
    "../x",
    "a/../../x",  # climbs out after a harmless start
    "a/b/../../../x",
    "./../x",
    "a\x00b",  # NUL
    "x\x00",
    "a\\..\\b",  # backslash
    "C:\\x",
    "\\\\host\\share",
    "",
    ".",
]
DATA = b"payload"
SHA = hashlib.sha256(DATA).hexdigest()


async def _shape(response: httpx.Response) -> None:
    if response.status_code >= 400:
        await response.aread()
        body = response.json()
        assert set(body) == {"error", "detail"}, body
        assert ERROR_STATUS[body["error"]] == response.status_code, body


Body = Callable[[httpx.AsyncClient, dict[str, str]], Awaitable[None]]


def serve(tmp_path: Path, body: Body) -> None:
    """Run `body(http, ids)` against a coordinator holding one job whose task is leased."""

    async def main() -> None:
        settings = Settings(data_dir=tmp_path, tokens={TOKEN: "root"})
        store = SQLiteStore(settings.db_path)
        app = build_app(settings, store, LocalBlobs(settings.blob_dir))
        try:
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://corral.test/api/v1",
                    headers={"authorization": f"Bearer {TOKEN}"},
                    event_hooks={"response": [_shape]},
                ) as http,
            ):
                assert (await http.put(f"/blobs/{SHA}", content=DATA)).status_code == 201
                inputs = {"in.txt": {"sha256": SHA, "size": len(DATA)}}
                r = await http.post("/jobs", json={"tasks": [{"argv": ["cat"], "inputs": inputs}]})
                job = r.json()["id"]
                worker = (await http.post("/workers", json={"name": "w", "slots": 1})).json()["id"]
                grant = (await http.post(f"/workers/{worker}/lease", json={"max": 1})).json()
                (a,) = grant["assignments"]
                ids = {"job": job, "task": a["task_id"], "lease": a["lease_id"], "worker": worker}
                await asyncio.wait_for(body(http, ids), 60)
                # nothing was created, nothing was lost
                assert [j["id"] for j in (await http.get("/jobs")).json()] == [job]
                assert (await http.get(f"/jobs/{job}")).json()["total"] == 1
                assert (await http.get(f"/tasks/{a['task_id']}")).json()["status"] == "running"
                stored = [p.name for p in settings.blob_dir.rglob("*") if p.is_file()]
                assert stored == [SHA]
        finally:
            store.close()

    asyncio.run(main())


async def refused(http: httpx.AsyncClient, method: str, path: str, **kw: Any) -> int:
    r = await http.request(method, path, **kw)
    assert 400 <= r.status_code < 500, (method, path, kw, r.status_code, r.text)
    return r.status_code


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_hostile_names_are_refused_everywhere(tmp_path: Path, name: str) -> None:
    async def body(http: httpx.AsyncClient, ids: dict[str, str]) -> None:
        ref = {"sha256": SHA, "size": len(DATA)}
        as_input = {"argv": ["cat"], "inputs": {name: ref}}
        as_output = {"argv": ["cat"], "outputs": [name]}
        for task in (as_input, as_output):
            assert await refused(http, "POST", "/jobs", json={"tasks": [task]}) == 422
            path = f"/jobs/{ids['job']}/tasks"
            assert await refused(http, "POST", path, json={"tasks": [task]}) == 422
        result = {"lease_id": ids["lease"], "exit_code": 0, "manifest": {name: ref}}
        await refused(http, "POST", f"/tasks/{ids['task']}/result", json=result)
        for bad_sha in {name, name + SHA, SHA[:-2] + "/.."} - {SHA}:
            await refused(http, "POST", "/blobs/missing", json={"sha256": [bad_sha]})
        if not name:
            return  # "/jobs/" is only a redirect to "/jobs"
        escaped = quote(name, safe="").replace(".", "%2E")  # or httpx resolves the dots
        await refused(http, "PUT", f"/blobs/{escaped}", content=DATA)
        await refused(http, "GET", f"/blobs/{escaped}")
        for path in (f"/jobs/{escaped}", f"/tasks/{escaped}", f"/tasks/{escaped}/log"):
            await refused(http, "GET", path)
        await refused(http, "POST", f"/tasks/{escaped}/kill")
        await refused(http, "POST", f"/workers/{escaped}/heartbeat", json={})
        await refused(http, "POST", f"/tokens/{escaped}/revoke")

    serve(tmp_path, body)


BODY_ENDPOINTS = [e for e in ENDPOINTS if e.body is not None]


def _path(template: str, ids: dict[str, str]) -> str:
    kind = next(k for k in ("worker", "task", "job") if f"/{k}s/" in template + "/jobs/")
    return template.replace("{id}", ids[kind])


def test_bad_bodies_are_refused_on_every_endpoint(tmp_path: Path) -> None:
    bad: list[tuple[bytes | Any, set[int]]] = [
        (b"{not json", {400}),
        (b'{"tasks": [', {400, 422}),  # truncated (an unknown field may be noticed first)
        ([1, 2], {422}),  # wrong type at the top
        ({"bogus_field": 1}, {422}),  # unknown field (and required ones missing)
        ("x" * 10, {422}),
    ]

    async def body(http: httpx.AsyncClient, ids: dict[str, str]) -> None:
        for endpoint in BODY_ENDPOINTS:
            path = _path(endpoint.path, ids)
            for payload, status in bad:
                kw: dict[str, Any] = (
                    {"content": payload, "headers": {"content-type": "application/json"}}
                    if isinstance(payload, bytes)
                    else {"json": payload}
                )
                assert await refused(http, endpoint.method, path, **kw) in status, endpoint.path
        for argv in ([], ["echo", 1], [None], "echo hi", [["nested"]], [""]):
            await refused(http, "POST", "/jobs", json={"tasks": [{"argv": argv}]})
        await refused(http, "POST", "/jobs", json={"tasks": [{"argv": ["x"], "env": {"A": 1}}]})
        await refused(http, "POST", "/jobs", json={"tasks": [{"argv": ["x"], "surprise": 1}]})
        await refused(http, "POST", "/tokens", json={"name": "x", "role": "root"})
        await refused(http, "POST", "/tokens", json={"name": "x\n", "role": "submit"})
        await refused(http, "POST", "/tokens", json={"name": "x", "role": "submit", "expires": -1})
        no_such = "0" * 32
        for path in (f"/jobs/{no_such}", f"/tasks/{no_such}", f"/blobs/{'0' * 64}"):
            assert await refused(http, "GET", path) == 404
        assert await refused(http, "POST", f"/tokens/{no_such}/revoke") == 404
        tasks = {"tasks": [{"argv": ["true"]}]}
        assert await refused(http, "POST", f"/jobs/{no_such}/tasks", json=tasks) == 404
        assert (await http.get("/tokens")).json()[0]["name"] == "root"  # nothing new

    serve(tmp_path, body)
