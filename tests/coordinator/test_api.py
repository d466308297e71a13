"""The coordinator's HTTP API, in process: httpx over ASGI inside the app's lifespan.

Every test body is a coroutine run by the `serve` fixture; every response is checked by an
event hook, so no test can get a 4xx or 5xx without the {"error", "detail"} shape.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.coordinator import Settings, build_app
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.store import SQLiteStore, Store
from corral.protocol import ERROR_STATUS

TOKEN = "test-token"
ROOT = "http://corral.test"
BASE = ROOT + "/api/v1"
NO_SUCH = "0" * 32
BOUND = 5.0  # seconds any single wait in a test may take before it counts as hung

Body = Callable[["Api"], Awaitable[None]]


async def check_error_shape(response: httpx.Response) -> None:
    """Every failed answer is exactly {"error": code, "detail": text}, code matching status."""
    if response.status_code < 400:
        return
    await response.aread()
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and isinstance(body["detail"], str)
    assert body["detail"], body
    assert ERROR_STATUS.get(body["error"]) == response.status_code, body


@dataclass
class Api:
    """An in-process coordinator and an authenticated client for it."""

    http: httpx.AsyncClient
    transport: httpx.ASGITransport
    settings: Settings
    store: Store

    async def submit(self, *tasks: dict[str, Any], name: str = "") -> dict[str, Any]:
        r = await self.http.post("/jobs", json={"name": name, "tasks": list(tasks)})
        assert r.status_code == 201, r.text
        return r.json()

    async def refuse(self, status: int, code: str, method: str, path: str, **kw: Any) -> str:
        """Send a request that must be refused; return its detail."""
        r = await self.http.request(method, path, **kw)
        assert (r.status_code, r.json()["error"]) == (status, code), r.text
        return str(r.json()["detail"])

    async def job_ids(self) -> list[str]:
        r = await self.http.get("/jobs")
        assert r.status_code == 200
        return [j["id"] for j in r.json()]

    async def tasks(self, job_id: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"/jobs/{job_id}/tasks")
        assert r.status_code == 200
        return list(r.json())

    async def task(self, task_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/tasks/{task_id}")
        assert r.status_code == 200
        return dict(r.json())

    async def job(self, job_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/jobs/{job_id}")
        assert r.status_code == 200
        return dict(r.json())

    async def register(self, name: str = "w", slots: int = 8, **caps: Any) -> str:
        r = await self.http.post(
            "/workers", json={"name": name, "slots": slots, "capabilities": caps}
        )
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    async def lease(self, worker: str, wait: float = 0.0, max: int = 1) -> list[dict[str, Any]]:
        r = await self.http.post(f"/workers/{worker}/lease", json={"max": max, "wait": wait})
        assert r.status_code == 200, r.text
        return list(r.json()["assignments"])

    async def heartbeat(self, worker: str, leases: list[str], wait: float = 0.0) -> list[str]:
        r = await self.http.post(
            f"/workers/{worker}/heartbeat", json={"leases": leases, "wait": wait}
        )
        assert r.status_code == 200, r.text
        return list(r.json()["cancel"])

    async def result(self, task_id: str, lease_id: str, exit_code: int = 0) -> httpx.Response:
        body = {"lease_id": lease_id, "exit_code": exit_code}
        return await self.http.post(f"/tasks/{task_id}/result", json=body)

    async def upload(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        r = await self.http.put(f"/blobs/{sha}", content=data)
        assert r.status_code == 201, r.text
        return sha


def run_api(
    data_dir: Path,
    body: Body,
    open_store: Callable[[Settings], Store] | None = None,
    **overrides: Any,
) -> None:
    """Run `body(api)` against a fresh coordinator on `data_dir`, inside its lifespan; its
    store is SQLite's in `data_dir` unless `open_store` opens another."""

    async def main() -> None:
        settings = Settings(data_dir=data_dir, tokens={TOKEN: "alice"}, **overrides)
        store = open_store(settings) if open_store else SQLiteStore(settings.db_path)
        try:
            app = build_app(settings, store, LocalBlobs(settings.blob_dir))
            transport = httpx.ASGITransport(app=app)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=transport,
                    base_url=BASE,
                    headers={"authorization": f"Bearer {TOKEN}"},
                    event_hooks={"response": [check_error_shape]},
                ) as http,
            ):
                await asyncio.wait_for(body(Api(http, transport, settings, store)), 60)
        finally:
            store.close()

    asyncio.run(main())


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., None]:
    """serve(body, **settings): run `body(api)` against a fresh coordinator."""
    return functools.partial(run_api, tmp_path)


def echo(*args: str, **fields: Any) -> dict[str, Any]:
    return {"argv": ["echo", *args], **fields}


# auth and basics


def test_healthz_needs_no_token(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        r = await api.http.get(ROOT + "/healthz", headers={"authorization": ""})
        assert r.status_code == 200
        assert r.json()["ok"] is True

    serve(body)


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x"],
)
def test_unauthorized_without_the_right_token(
    serve: Callable[..., None], header: str | None
) -> None:
    async def body(api: Api) -> None:
        headers = {} if header is None else {"authorization": header}
        async with httpx.AsyncClient(
            transport=api.transport,
            base_url=BASE,
            headers=headers,
            event_hooks={"response": [check_error_shape]},
        ) as anon:
            for method, path in [
                ("GET", "/jobs"),
                ("POST", "/jobs"),
                ("GET", "/openapi.json"),
                ("GET", f"/tasks/{NO_SUCH}"),
                ("POST", "/workers"),
            ]:
                r = await anon.request(method, path)
                assert r.status_code == 401
                assert r.json()["error"] == "unauthorized"

    serve(body)


def test_bearer_scheme_is_case_insensitive(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        r = await api.http.get("/jobs", headers={"authorization": f"bearer {TOKEN}"})
        assert r.status_code == 200

    serve(body)


def test_unknown_route_and_method_are_json_errors(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.refuse(404, "not_found", "GET", "/no-such-thing")
        await api.refuse(405, "method_not_allowed", "DELETE", "/jobs")
        await api.refuse(
            415,
            "unsupported_media_type",
            "POST",
            "/jobs",
            content=b"{}",
            headers={"content-type": "text/plain"},
        )

    serve(body)


def test_openapi_document(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        r = await api.http.get("/openapi.json")
        assert r.status_code == 200
        doc = r.json()
        assert doc["openapi"].startswith("3.")
        assert {"title", "version"} <= set(doc["info"])
        paths = doc["paths"]
        for path, method in [
            ("/api/v1/jobs", "post"),
            ("/api/v1/jobs", "get"),
            ("/api/v1/jobs/{id}", "get"),
            ("/api/v1/jobs/{id}/events", "get"),
            ("/api/v1/tasks/{id}/result", "post"),
            ("/api/v1/blobs/{sha256}", "put"),
            ("/api/v1/workers/{id}/lease", "post"),
            ("/api/v1/scale", "get"),
        ]:
            assert method in paths[path], (path, method)
        assert paths["/api/v1/jobs"]["post"]["requestBody"]["required"] is True
        assert paths["/api/v1/jobs/{id}"]["get"]["parameters"][0]["name"] == "id"
        schemas = doc["components"]["schemas"]
        assert {"JobCreate", "TaskSpec", "Job", "Task", "ErrorBody", "LeaseGrant"} <= set(schemas)
        assert {"ScaleStatus", "ScaleProviderInfo", "LaunchInfo"} <= set(schemas)
        assert set(schemas["ErrorBody"]["required"]) == {"error", "detail"}
        op_ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
        assert len(op_ids) == len(set(op_ids))
        refs: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "$ref":
                        refs.append(value)
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(doc)
        assert refs
        for ref in refs:
            assert ref.startswith("#/components/schemas/"), ref
            assert ref.rsplit("/", 1)[1] in schemas, ref

    serve(body)


# submitting jobs: refusals create nothing


def test_submit_and_read_back(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        sha = await api.upload(b"data")
        job = await api.submit(
            echo("a", env={"K": "V"}, inputs={"in/x.txt": {"sha256": sha, "size": 4}}),
            echo("b", requires={"os": "linux"}),
            name="named",
        )
        assert job["owner"] == "alice"
        assert job["name"] == "named"
        assert job["status"] == "queued"
        assert job["total"] == 2
        assert job["counts"] == {
            "queued": 2,
            "running": 0,
            "succeeded": 0,
            "failed": 0,
            "killed": 0,
        }
        task_ids = job.pop("task_ids")  # the submit's answer alone names the tasks
        assert await api.job(job["id"]) == job
        tasks = await api.tasks(job["id"])
        assert [t["id"] for t in tasks] == task_ids
        assert [t["seq"] for t in tasks] == [0, 1]
        assert [t["argv"] for t in tasks] == [["echo", "a"], ["echo", "b"]]
        assert tasks[0]["inputs"]["in/x.txt"]["sha256"] == sha
        assert tasks[1]["requires"] == {"os": "linux"}
        # a single read also says why a queued task is not running; lists leave that out
        one = await api.task(tasks[0]["id"])
        assert one.pop("pending_reason") == "no worker is connected"
        assert one == {k: v for k, v in tasks[0].items() if k != "pending_reason"}
        assert await api.job_ids() == [job["id"]]

    serve(body)


BAD_JOBS: list[tuple[str, Any, int, str]] = [
    ("malformed JSON", b'{"tasks": [', 400, "bad_request"),
    ("not an object", b"[1, 2]", 422, "invalid_body"),
    ("no tasks field", b"{}", 422, "invalid_body"),
    ("wrong type", {"tasks": "echo hi"}, 422, "invalid_body"),
    ("wrong name type", {"tasks": [echo()], "name": 5}, 422, "invalid_body"),
    ("unknown job field", {"tasks": [echo()], "urgency": 1}, 422, "invalid_body"),
    ("unknown task field", {"tasks": [{"argv": ["x"], "cmd": "x"}]}, 422, "invalid_body"),
    ("argv not strings", {"tasks": [{"argv": ["echo", 1]}]}, 422, "invalid_body"),
    ("argv a string", {"tasks": [{"argv": "echo hi"}]}, 422, "invalid_body"),
    ("empty argv", {"tasks": [{"argv": []}]}, 422, "invalid_argument"),
    ("empty command", {"tasks": [{"argv": [""]}]}, 422, "invalid_argument"),
    ("no tasks", {"tasks": []}, 422, "invalid_argument"),
    ("bad env name", {"tasks": [echo(env={"A=B": "1"})]}, 422, "invalid_argument"),
    ("negative limit", {"tasks": [echo(limits={"cpu": -1})]}, 422, "invalid_argument"),
    ("zero attempts", {"tasks": [echo(max_attempts=0)]}, 422, "invalid_argument"),
    ("unknown requirement", {"tasks": [echo(requires={"colour": "red"})]}, 422, "invalid_argument"),
    (
        "non-numeric minimum",
        {"tasks": [echo(requires={"min_cpus": "lots"})]},
        422,
        "invalid_argument",
    ),
    ("absolute output", {"tasks": [echo(outputs=["/etc/*"])]}, 422, "invalid_argument"),
    ("second task bad", {"tasks": [echo(), {"argv": []}]}, 422, "invalid_argument"),
    (
        "bad sha",
        {"tasks": [echo(inputs={"x": {"sha256": "abc", "size": 1}})]},
        422,
        "invalid_argument",
    ),
    ("input type", {"tasks": [echo(inputs={"x": "abc"})]}, 422, "invalid_body"),
]


@pytest.mark.parametrize(
    ("payload", "status", "code"), [b[1:] for b in BAD_JOBS], ids=[b[0] for b in BAD_JOBS]
)
def test_bad_job_is_refused_and_creates_nothing(
    serve: Callable[..., None], payload: Any, status: int, code: str
) -> None:
    async def body(api: Api) -> None:
        worker = await api.register()
        kw = {"content": payload} if isinstance(payload, bytes) else {"json": payload}
        await api.refuse(status, code, "POST", "/jobs", **kw)
        assert await api.job_ids() == []
        assert await api.lease(worker, max=10) == []

    serve(body)


@pytest.mark.parametrize("name", ["/etc/x", "../x", "a/../../x", "a\u0000b", "a\\b", "", "."])
def test_unsafe_input_name_is_refused(serve: Callable[..., None], name: str) -> None:
    async def body(api: Api) -> None:
        sha = await api.upload(b"payload")
        task = echo(inputs={name: {"sha256": sha, "size": 7}})
        detail = await api.refuse(422, "invalid_argument", "POST", "/jobs", json={"tasks": [task]})
        assert detail.startswith("tasks[0].inputs[")
        assert await api.job_ids() == []

    serve(body)


def test_input_blob_never_uploaded_is_refused(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        have = await api.upload(b"here")
        lacking = hashlib.sha256(b"not uploaded").hexdigest()
        tasks = [
            echo(inputs={"a": {"sha256": have, "size": 4}}),
            echo(inputs={"b": {"sha256": lacking, "size": 12}}),
        ]
        detail = await api.refuse(422, "invalid_argument", "POST", "/jobs", json={"tasks": tasks})
        assert lacking in detail
        assert await api.job_ids() == []

    serve(body)


def test_too_many_tasks_is_refused(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        tasks = [echo(str(i)) for i in range(3)]
        await api.refuse(413, "too_large", "POST", "/jobs", json={"tasks": tasks})
        assert await api.job_ids() == []

    serve(body, max_tasks_per_job=2)


def test_oversize_body_is_refused(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        big = {"tasks": [echo("x" * 2000)]}
        await api.refuse(413, "too_large", "POST", "/jobs", json=big)

        async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it arrives
            data = json.dumps(big).encode()
            for i in range(0, len(data), 100):
                yield data[i : i + 100]

        await api.refuse(413, "too_large", "POST", "/jobs", content=chunks())
        assert await api.job_ids() == []
        await api.submit(echo("small"))  # the limit is not a general refusal

    serve(body, max_body_bytes=1024)


# ids that do not exist


UNKNOWN: list[tuple[str, str, Any]] = [
    ("GET", "/jobs/{x}", None),
    ("GET", "/jobs/{x}/tasks", None),
    ("POST", "/jobs/{x}/kill", None),
    ("POST", "/jobs/{x}/retry", None),
    ("GET", "/jobs/{x}/events", None),
    ("GET", "/tasks/{x}", None),
    ("POST", "/tasks/{x}/kill", None),
    ("GET", "/tasks/{x}/log", None),
    ("POST", "/tasks/{x}/result", {"lease_id": NO_SUCH, "exit_code": 0}),
    ("POST", "/workers/{x}/heartbeat", {}),
    ("POST", "/workers/{x}/heartbeat", {"capabilities": {"os": "linux"}}),
    ("POST", "/workers/{x}/lease", {"max": 1}),
    ("POST", "/workers/{x}/deregister", None),
    ("GET", "/blobs/" + "ab" * 32, None),
]


@pytest.mark.parametrize(("method", "path", "payload"), UNKNOWN)
def test_unknown_ids_are_404(
    serve: Callable[..., None], method: str, path: str, payload: Any
) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo())  # something exists, just not this
        await api.register()
        kw = {} if payload is None else {"json": payload}
        detail = await api.refuse(404, "not_found", method, path.format(x=NO_SUCH), **kw)
        assert NO_SUCH in detail or "ab" * 32 in detail

    serve(body)


# blobs


def test_blob_roundtrip_and_missing(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        data = b"\x00binary\xffcontent" * 1000
        sha = hashlib.sha256(data).hexdigest()
        other = hashlib.sha256(b"other").hexdigest()
        r = await api.http.post("/blobs/missing", json={"sha256": [sha, other, sha]})
        assert r.json() == {"missing": [sha, other]}
        await api.upload(data)
        again = await api.http.put(f"/blobs/{sha}", content=data)
        assert (again.status_code, again.json()["stored"]) == (200, False)
        r = await api.http.post("/blobs/missing", json={"sha256": [sha, other]})
        assert r.json() == {"missing": [other]}
        r = await api.http.get(f"/blobs/{sha}")
        assert r.status_code == 200 and r.content == data
        await api.refuse(
            422, "invalid_argument", "POST", "/blobs/missing", json={"sha256": ["nope"]}
        )
        await api.refuse(422, "invalid_argument", "PUT", "/blobs/NOT-A-HASH", content=b"x")
        await api.refuse(422, "invalid_argument", "GET", "/blobs/" + "A" * 64)

    serve(body)


def test_blob_with_wrong_hash_is_refused_and_not_stored(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        claimed = hashlib.sha256(b"what I said").hexdigest()
        detail = await api.refuse(422, "hash_mismatch", "PUT", f"/blobs/{claimed}", content=b"lie")
        assert hashlib.sha256(b"lie").hexdigest() in detail
        await api.refuse(404, "not_found", "GET", f"/blobs/{claimed}")
        r = await api.http.post("/blobs/missing", json={"sha256": [claimed]})
        assert r.json() == {"missing": [claimed]}
        assert list((api.settings.blob_dir / "tmp").iterdir()) == []

    serve(body)


def test_oversize_blob_is_refused_and_not_stored(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        data = b"x" * 100
        sha = hashlib.sha256(data).hexdigest()
        await api.refuse(413, "too_large", "PUT", f"/blobs/{sha}", content=data)
        await api.refuse(404, "not_found", "GET", f"/blobs/{sha}")
        assert list((api.settings.blob_dir / "tmp").iterdir()) == []

    serve(body, max_blob_bytes=50)


# leases


def test_two_workers_one_task_exactly_one_lease(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo())
        a, b = await api.register("a"), await api.register("b")
        got = await asyncio.gather(api.lease(a, wait=0.2), api.lease(b, wait=0.2))
        assert sorted(len(g) for g in got) == [0, 1]
        (grant,) = got[0] + got[1]
        task = await api.task(grant["task_id"])
        assert task["status"] == "running"
        assert task["worker_id"] == (a if got[0] else b)
        assert task["attempts"] == grant["attempt"] == 1
        assert (await api.job(job["id"]))["status"] == "running"

    serve(body)


def test_many_workers_never_share_a_task(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.submit(*[echo(str(i)) for i in range(5)])
        workers = [await api.register(f"w{i}") for i in range(8)]
        got = await asyncio.gather(*(api.lease(w, wait=0.2, max=2) for w in workers))
        task_ids = [g["task_id"] for grants in got for g in grants]
        lease_ids = [g["lease_id"] for grants in got for g in grants]
        assert sorted(task_ids) == sorted(set(task_ids)) and len(task_ids) == 5
        assert len(set(lease_ids)) == 5
        assert all(len(g) <= 2 for g in got)

    serve(body)


def test_lease_honours_requirements(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo(requires={"os": "plan9"}), echo(requires={"label.zone": "*"}))
        plain = await api.register("plain", os="linux")
        assert await api.lease(plain, max=5) == []
        zoned = await api.register("zoned", os="plan9", labels={"zone": "eu"})
        grants = await api.lease(zoned, max=5)
        assert len(grants) == 2

    serve(body)


def test_lease_is_oldest_first_across_requirement_classes(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        old = await api.submit(echo(requires={"os": "linux"}))
        new = await api.submit(echo())
        worker = await api.register(os="linux")
        (first,) = await api.lease(worker)
        (second,) = await api.lease(worker)
        assert (first["job_id"], second["job_id"]) == (old["id"], new["id"])

    serve(body)


def test_a_worker_with_malformed_capabilities_breaks_nothing(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo(requires={"programs": "gcc"}))
        odd = await api.register("odd", programs=[["gcc"]], cpus="many", labels=["x"])
        assert await api.lease(odd) == []
        (task,) = await api.tasks(job["id"])
        assert (await api.task(task["id"]))["pending_reason"]  # computed over every worker
        r = await api.http.post(f"/workers/{odd}/heartbeat", json={"leases": []})
        assert r.status_code == 200
        good = await api.register("good", programs=["gcc"])
        assert [g["task_id"] for g in await api.lease(good)] == [task["id"]]

    serve(body)


def test_draining_worker_gets_nothing(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo())
        worker = await api.register()
        r = await api.http.post(f"/workers/{worker}/heartbeat", json={"draining": True})
        assert r.status_code == 200
        assert await api.lease(worker, wait=0.1) == []
        workers = (await api.http.get("/workers")).json()
        assert workers[0]["status"] == "draining"

    serve(body)


def test_register_refuses_zero_slots(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        payload = {"name": "w", "slots": 0}
        await api.refuse(422, "invalid_argument", "POST", "/workers", json=payload)
        await api.refuse(422, "invalid_body", "POST", "/workers", json={"name": "w"})
        assert (await api.http.get("/workers")).json() == []

    serve(body)


def test_stale_lease_is_fenced_off(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo())
        worker = await api.register()
        (grant,) = await api.lease(worker)
        task_id, lease_id = grant["task_id"], grant["lease_id"]
        before = await api.task(task_id)

        r = await api.result(task_id, NO_SUCH, exit_code=0)
        assert (r.status_code, r.json()["error"]) == (409, "stale_lease")
        assert await api.task(task_id) == before

        r = await api.result(task_id, lease_id, exit_code=3)
        assert r.status_code == 200
        done = r.json()
        assert (done["status"], done["exit_code"]) == ("failed", 3)

        r = await api.result(task_id, lease_id, exit_code=0)  # the same lease, again
        assert (r.status_code, r.json()["error"]) == (409, "stale_lease")
        assert await api.task(task_id) == done
        assert await api.heartbeat(worker, [lease_id]) == [lease_id]

    serve(body)


def test_result_with_output_blobs(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo())
        worker = await api.register()
        (grant,) = await api.lease(worker)
        out = await api.upload(b"hello\n")
        missing = hashlib.sha256(b"never").hexdigest()
        payload = {"lease_id": grant["lease_id"], "exit_code": 0, "stdout": missing}
        path = f"/tasks/{grant['task_id']}/result"
        await api.refuse(422, "invalid_argument", "POST", path, json=payload)
        assert (await api.task(grant["task_id"]))["status"] == "running"
        payload = {
            "lease_id": grant["lease_id"],
            "exit_code": 0,
            "stdout": out,
            "manifest": {"out.txt": {"sha256": out, "size": 6}},
        }
        r = await api.http.post(path, json=payload)
        assert r.status_code == 200
        task = r.json()
        assert (task["status"], task["stdout"]) == ("succeeded", out)
        assert task["manifest"] == {"out.txt": {"sha256": out, "size": 6, "mode": 0o644}}
        log = await api.http.get(f"/tasks/{grant['task_id']}/log")
        assert log.content == b"hello\n"
        assert log.headers["x-corral-status"] == "succeeded"
        tail = await api.http.get(f"/tasks/{grant['task_id']}/log", params={"offset": 6})
        assert (tail.content, tail.headers["x-corral-final"]) == (b"", "1")

    serve(body)


def test_error_result_fails_the_task(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo())
        worker = await api.register()
        (grant,) = await api.lease(worker)
        payload = {"lease_id": grant["lease_id"], "exit_code": 0, "error": "sandbox broke"}
        r = await api.http.post(f"/tasks/{grant['task_id']}/result", json=payload)
        assert (r.json()["status"], r.json()["error"]) == ("failed", "sandbox broke")
        assert (await api.job(job["id"]))["status"] == "failed"

    serve(body)


def test_a_result_carries_what_the_task_used(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo())
        worker = await api.register()
        (grant,) = await api.lease(worker)
        path = f"/tasks/{grant['task_id']}/result"
        payload = {"lease_id": grant["lease_id"], "exit_code": 0, "peak_memory": -1}
        r = await api.http.post(path, json=payload)
        assert r.status_code == 422, r.text  # out of range (the code is the decoder's)
        assert (await api.task(grant["task_id"]))["status"] == "running"
        payload = {**payload, "peak_memory": 3 << 30, "cpu_seconds": 0.75}
        r = await api.http.post(path, json=payload)
        assert r.status_code == 200, r.text
        task = await api.task(grant["task_id"])
        assert (task["peak_memory"], task["cpu_seconds"]) == (3 << 30, 0.75)

    serve(body)


# kill


def test_kill_queued_task(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo("a"), echo("b"))
        first, second = await api.tasks(job["id"])
        r = await api.http.post(f"/tasks/{first['id']}/kill")
        assert r.status_code == 200
        assert r.json()["status"] == "killed"
        j = await api.job(job["id"])
        assert (j["counts"]["killed"], j["counts"]["queued"]) == (1, 1)
        worker = await api.register()
        (grant,) = await api.lease(worker, max=5)
        assert grant["task_id"] == second["id"]
        r = await api.http.post(f"/tasks/{first['id']}/kill")  # killing twice changes nothing
        assert r.json()["status"] == "killed"

    serve(body)


def test_kill_running_task_cancels_its_lease(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo())
        worker = await api.register()
        (grant,) = await api.lease(worker)
        assert await api.heartbeat(worker, [grant["lease_id"]]) == []
        r = await api.http.post(f"/jobs/{job['id']}/kill")
        assert r.json()["status"] == "killed"
        assert await api.heartbeat(worker, [grant["lease_id"]]) == [grant["lease_id"]]
        r = await api.result(grant["task_id"], grant["lease_id"], exit_code=0)
        assert r.status_code == 409
        assert (await api.task(grant["task_id"]))["status"] == "killed"

    serve(body)


def test_waiting_heartbeat_hears_of_a_kill(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo())
        worker = await api.register()
        (grant,) = await api.lease(worker)
        beat = asyncio.create_task(api.heartbeat(worker, [grant["lease_id"]], wait=BOUND))
        await asyncio.sleep(0.05)
        r = await api.http.post(f"/tasks/{grant['task_id']}/kill")
        assert r.status_code == 200
        assert await asyncio.wait_for(beat, BOUND * 3) == [grant["lease_id"]]

    serve(body, heartbeat_interval=BOUND)


def test_kill_finished_job_is_a_no_op(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo())
        worker = await api.register()
        (grant,) = await api.lease(worker)
        await api.result(grant["task_id"], grant["lease_id"], exit_code=0)
        r = await api.http.post(f"/jobs/{job['id']}/kill")
        assert r.json()["status"] == "succeeded"

    serve(body)


def test_retry_failed_requeues_failed_tasks_as_new_attempts(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo(), echo())
        worker = await api.register()
        for grant in await api.lease(worker, max=2):
            await api.result(grant["task_id"], grant["lease_id"], exit_code=1 if grant else 0)
        first, second = await api.tasks(job["id"])
        assert (first["status"], second["status"]) == ("failed", "failed")
        r = await api.http.post(f"/jobs/{job['id']}/retry")
        assert r.status_code == 200 and r.json()["counts"]["queued"] == 2
        (grant, *_) = await api.lease(worker, max=2)
        assert grant["attempt"] == 2
        r = await api.http.get("/audit")
        assert [e["action"] for e in r.json()][-1] == "job.retry"
        assert r.json()[-1]["detail"] == "2 tasks"

    serve(body)


# long polls and events


def test_long_poll_lease_wakes_on_submit(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        worker = await api.register()
        poll = asyncio.create_task(api.lease(worker, wait=BOUND))
        await asyncio.sleep(0.05)
        job = await api.submit(echo())
        grants = await asyncio.wait_for(poll, BOUND * 3)
        assert [g["job_id"] for g in grants] == [job["id"]]

    serve(body)


def test_lease_wait_without_work_returns_empty(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        worker = await api.register()
        assert await api.lease(worker, wait=0.1) == []

    serve(body)


def parse_sse(text: str) -> list[dict[str, str]]:
    """Events of an SSE body as dicts of their fields; comments dropped."""
    out = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            out.append(fields)
    return out


def test_events_stream_in_order_until_done_and_resume(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo("a"), echo("b"))
        path = f"/jobs/{job['id']}/events"
        stream = asyncio.create_task(api.http.get(path))
        worker = await api.register()
        grants = await api.lease(worker, max=2)
        await asyncio.sleep(0.05)
        assert not stream.done()  # the job is live: the stream stays open
        await api.result(grants[0]["task_id"], grants[0]["lease_id"], exit_code=0)
        await api.result(grants[1]["task_id"], grants[1]["lease_id"], exit_code=1)
        r = await asyncio.wait_for(stream, BOUND)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(r.text)
        assert events[-1] == {"event": "end", "data": "{}"}
        tasks = events[:-1]
        assert all(e["event"] == "task" for e in tasks)
        data = [json.loads(e["data"]) for e in tasks]
        assert [int(e["id"]) for e in tasks] == [d["seq"] for d in data]
        seqs = [d["seq"] for d in data]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert [(d["task_id"], d["status"], d["exit_code"]) for d in data] == [
            (grants[0]["task_id"], "running", None),
            (grants[1]["task_id"], "running", None),
            (grants[0]["task_id"], "succeeded", 0),
            (grants[1]["task_id"], "failed", 1),
        ]
        assert {d["job_id"] for d in data} == {job["id"]}

        resumed = await api.http.get(path, headers={"last-event-id": str(seqs[1])})
        again = parse_sse(resumed.text)
        assert [int(e["id"]) for e in again[:-1]] == seqs[2:]
        assert again[-1]["event"] == "end"
        by_query = await api.http.get(path, params={"after": str(seqs[2])})
        assert [int(e["id"]) for e in parse_sse(by_query.text)[:-1]] == seqs[3:]
        past_end = await api.http.get(path, headers={"last-event-id": str(seqs[-1])})
        assert parse_sse(past_end.text) == [{"event": "end", "data": "{}"}]
        await api.refuse(400, "bad_request", "GET", path, headers={"last-event-id": "x"})

    serve(body)


def test_events_of_other_jobs_are_not_mixed_in(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        mine = await api.submit(echo())
        theirs = await api.submit(echo())
        for t in await api.tasks(theirs["id"]):
            await api.http.post(f"/tasks/{t['id']}/kill")
        await api.http.post(f"/jobs/{mine['id']}/kill")
        events = parse_sse((await api.http.get(f"/jobs/{mine['id']}/events")).text)
        data = [json.loads(e["data"]) for e in events[:-1]]
        assert [(d["job_id"], d["status"]) for d in data] == [(mine["id"], "killed")]

    serve(body)


def test_query_parameters_are_checked(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        job = await api.submit(echo("a"), echo("b"), echo("c"))
        await api.refuse(400, "bad_request", "GET", "/jobs", params={"limit": "x"})
        # a number out of its range is an invalid argument, as in a body (test_bounds.py)
        detail = await api.refuse(422, "invalid_argument", "GET", "/jobs", params={"limit": "0"})
        assert detail == "limit: must be an integer from 1 to 100000"
        path = f"/jobs/{job['id']}/tasks"
        await api.refuse(400, "bad_request", "GET", path, params={"status": "sleeping"})
        await api.refuse(422, "invalid_argument", "GET", path, params={"offset": "-1"})
        page = (await api.http.get(path, params={"offset": 1, "limit": 1})).json()
        assert [t["argv"][1] for t in page] == ["b"]
        queued = (await api.http.get(path, params={"status": "queued"})).json()
        assert len(queued) == 3
        task_id = queued[0]["id"]
        await api.refuse(
            400, "bad_request", "GET", f"/tasks/{task_id}/log", params={"stream": "stdin"}
        )

    serve(body)
