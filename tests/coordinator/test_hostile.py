"""Hostile input on every endpoint that takes a path, a name, a body or a number: always a 4xx
with the error shape, and nothing is created or lost. In process (httpx over ASGI)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# Extreme numbers, drawn by hypothesis from all the integers (and all the floats, NaN and
# infinities too, where a float goes): never a 5xx, and outside a field's range always a 422
# invalid_argument naming it. One coordinator for the whole module; accepted values may
# create things, which does not matter here (test_bounds.py checks that refusals do not).

INT32 = (-(2**31), 2**31 - 1)
U32 = (0, 2**31 - 1)
U64 = (0, 2**63 - 1)
YEARS_100 = 100 * 365 * 86400.0


@dataclass(frozen=True)
class Number:
    """A number the API takes: where to send it, its range, and the name a 422 gives it."""

    name: str
    method: str
    path: str
    send: Callable[[Any], dict[str, Any]]  # the number -> httpx keywords
    low: float
    high: float
    is_float: bool = False
    low_open: bool = False  # low itself is refused
    prefix: str = ""  # what the detail starts with, when not "name:"

    def in_range(self, n: float) -> bool:
        if self.is_float:  # a float field reads an integer as the nearest float
            try:
                n = float(n)
            except OverflowError:
                return False
        return (self.low < n if self.low_open else self.low <= n) and n <= self.high


def _task(**fields: Any) -> dict[str, Any]:
    return {"json": {"tasks": [{"argv": ["true"], **fields}]}}


def _result(**fields: Any) -> dict[str, Any]:
    return {"lease_id": "@lease@", "exit_code": 0, **fields}


NUMBERS = [
    Number("tasks[0].max_attempts", "POST", "/jobs", lambda n: _task(max_attempts=n), 1, 1000),
    Number("tasks[0].retries", "POST", "/jobs", lambda n: _task(retries=n), 0, 1000),
    Number("tasks[0].limits[...]", "POST", "/jobs",
           lambda n: _task(limits={"memory": n}), 0, 2.0**53, is_float=True),
    Number("tasks[0].inputs[...].size", "POST", "/jobs",
           lambda n: _task(inputs={"in": {"sha256": SHA, "size": n}}), *U64),
    Number("tasks[0].inputs[...].mode", "POST", "/jobs",
           lambda n: _task(inputs={"in": {"sha256": SHA, "size": 7, "mode": n}}), 0, 0o7777),
    Number("tasks[1].after_index[0]", "POST", "/jobs",
           lambda n: {"json": {"tasks": [{"argv": ["true"]}, {"argv": ["x"], "after_index": [n]}]}},
           *U32),
    # below 1 the scheduler's check answers ("tasks[0].cpus must be at least 1")
    Number("tasks[0].requires.cpus", "POST", "/jobs",
           lambda n: _task(requires={"cpus": str(n)}), 1, 10_000, prefix="tasks[0]."),
    Number("tasks[0].max_attempts", "POST", "/jobs/@job@/tasks",
           lambda n: _task(max_attempts=n), 1, 1000),
    Number("slots", "POST", "/workers", lambda n: {"json": {"name": "w", "slots": n}}, 1, 10_000),
    Number("capabilities[...]", "POST", "/workers",
           lambda n: {"json": {"name": "w", "slots": 1, "capabilities": {"cpus": n}}},
           -(2**63), 2**63 - 1),
    Number("capabilities[...]", "POST", "/workers/@worker@/heartbeat",
           lambda n: {"json": {"capabilities": {"memory_total": n}}}, -(2**63), 2**63 - 1),
    Number("max", "POST", "/workers/@worker@/lease", lambda n: {"json": {"max": n}}, *U32),
    Number("prefetch", "POST", "/workers/@worker@/lease",
           lambda n: {"json": {"prefetch": n, "prefetch_job": "@job@"}}, *U32),
    Number("wait", "POST", "/workers/@worker@/lease",
           lambda n: {"json": {"wait": n}}, 0, YEARS_100, is_float=True),
    Number("wait", "POST", "/workers/@worker@/heartbeat",
           lambda n: {"json": {"wait": n}}, 0, YEARS_100, is_float=True),
    Number("logs[0].offset", "POST", "/workers/@worker@/heartbeat",
           lambda n: {"json": {"logs": [{"task_id": "@task@", "lease_id": "@lease@",
                                         "stream": "stdout", "offset": n, "data": ""}]}},
           *U64),
    Number("results[...].exit_code", "POST", "/workers/@worker@/results",
           lambda n: {"json": {"results": {"@task@": _result(exit_code=n)}}}, *INT32),
    Number("exit_code", "POST", "/tasks/@task@/result",
           lambda n: {"json": _result(exit_code=n)}, *INT32),
    Number("manifest[...].size", "POST", "/tasks/@task@/result",
           lambda n: {"json": _result(manifest={"o": {"sha256": SHA, "size": n}})}, *U64),
    Number("expires", "POST", "/tokens",
           lambda n: {"json": {"name": "t", "role": "submit", "expires": n}},
           0, YEARS_100, is_float=True, low_open=True),
    Number("limit", "GET", "/jobs", lambda n: {"params": {"limit": n}}, 1, 100_000),
    Number("offset", "GET", "/jobs/@job@/tasks", lambda n: {"params": {"offset": n}}, *U64),
    Number("limit", "GET", "/jobs/@job@/tasks", lambda n: {"params": {"limit": n}}, 1, 100_000),
    Number("after", "GET", "/jobs/@done@/events", lambda n: {"params": {"after": n}}, *U64),
    Number("Last-Event-ID", "GET", "/jobs/@done@/events",
           lambda n: {"headers": {"last-event-id": str(n)}}, *U64),
    Number("offset", "GET", "/tasks/@task@/log", lambda n: {"params": {"offset": n}}, *U64),
    Number("after", "GET", "/audit", lambda n: {"params": {"after": n}}, *U64),
    Number("limit", "GET", "/audit", lambda n: {"params": {"limit": n}}, 1, 100_000),
]  # fmt: skip


class Farm:
    """An in-process coordinator on an event loop in its own thread, so that hypothesis (which
    runs plain functions) can send it requests one at a time: `request` waits for each."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # no long polls: an in-range wait must not hold the run
        self.settings = Settings(
            data_dir=root, tokens={TOKEN: "root"}, max_lease_wait=0.0, heartbeat_interval=0.01
        )
        self.store = SQLiteStore(self.settings.db_path)
        app = build_app(self.settings, self.store, LocalBlobs(self.settings.blob_dir))
        self.lifespan = app.router.lifespan_context(app)
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://corral.test/api/v1",
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        self.run(self.lifespan.__aenter__())

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        response: httpx.Response = self.run(self.http.request(method, path, **kw))
        return response

    def close(self) -> None:
        try:
            self.run(self.http.aclose())
            self.run(self.lifespan.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
            self.store.close()


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Farm, dict[str, str]]]:
    """One coordinator with a job whose task is leased and has output, and a finished job."""
    farm = Farm(tmp_path_factory.mktemp("numbers"))
    try:
        post = functools.partial(farm.request, "POST")
        assert farm.request("PUT", f"/blobs/{SHA}", content=DATA).status_code == 201
        job = post("/jobs", json={"tasks": [{"argv": ["cat"]}]}).json()["id"]
        done = post("/jobs", json={"tasks": [{"argv": ["cat"]}]}).json()["id"]
        assert post(f"/jobs/{done}/kill").status_code == 200
        worker = post("/workers", json={"name": "w", "slots": 1}).json()["id"]
        (a,) = post(f"/workers/{worker}/lease", json={"max": 1}).json()["assignments"]
        chunk = {"task_id": a["task_id"], "lease_id": a["lease_id"], "stream": "stdout"}
        logs = [{**chunk, "offset": 0, "data": "aGk="}]
        assert post(f"/workers/{worker}/heartbeat", json={"logs": logs}).is_success
        ids = {"job": job, "done": done, "worker": worker}
        yield farm, ids | {"task": a["task_id"], "lease": a["lease_id"]}
    finally:
        farm.close()


def _extremes(number: Number) -> st.SearchStrategy[Any]:
    """Every integer, leaning on the edges: 64 bits, and either side of the field's range."""
    edges = [2**64, -(2**64), 2**63, 2**63 - 1, 2**31, -(2**31) - 1, -1, 0]
    edges += [int(number.low) - 1, int(number.low), int(number.high), int(number.high) + 1]
    ints = st.one_of(st.sampled_from(edges), st.integers())
    return st.one_of(ints, st.floats()) if number.is_float else ints


def _filled(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, text in ids.items():
            value = value.replace(f"@{key}@", text)
        return value
    if isinstance(value, dict):
        return {_filled(k, ids): _filled(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, ids) for v in value]
    return value


@pytest.mark.parametrize("number", NUMBERS, ids=lambda n: f"{n.method} {n.path} {n.name}")
def test_extreme_numbers_are_refused_never_a_crash(
    farm: tuple[Farm, dict[str, str]], number: Number
) -> None:
    http, ids = farm

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(n=_extremes(number))
    def send(n: float) -> None:
        path, kw = _filled(number.path, ids), _filled(number.send(n), ids)
        if "json" in kw and isinstance(n, float) and not math.isfinite(n):
            # httpx refuses to encode NaN or infinity: send the text Python's json writes
            body = json.dumps(kw.pop("json")).encode()
            kw |= {"content": body, "headers": {"content-type": "application/json"}}
        r = http.request(number.method, path, **kw)
        assert r.status_code < 500, (n, r.text)
        if r.status_code >= 400:
            assert set(r.json()) == {"error", "detail"}
            assert ERROR_STATUS[r.json()["error"]] == r.status_code, r.text
        if number.is_float and not math.isfinite(n):
            # JSON has no NaN or infinity: the body is not JSON
            assert (r.status_code, r.json()["error"]) == (400, "bad_request"), (n, r.text)
        elif not number.in_range(n):
            assert (r.status_code, r.json()["error"]) == (422, "invalid_argument"), (n, r.text)
            assert r.json()["detail"].startswith(number.prefix or number.name + ":"), (n, r.text)

    send()
