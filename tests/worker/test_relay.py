"""The relay between a sandboxed task and its coordinator (worker/relay.py), against an
in-process coordinator stand-in; the route table it enforces against the coordinator's own
rules; the client reaching a long socket path (_unix.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corral._unix import UnixAddress, unix_path, unix_url
from corral.client import Client
from corral.coordinator.access import ROLE_OPS
from corral.coordinator.routes import ENDPOINTS
from corral.protocol import JOB_TOKEN_ROUTES, RELAY_SOCKET, STATE_DIR, relay_allows
from corral.worker.relay import Relay, needs_relay
from corral.worker.sandbox import SandboxPolicy

SEEN: list[dict[str, Any]] = []


async def echo(request: Request) -> Response:
    body = await request.body()
    SEEN.append(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "auth": request.headers.get("authorization"),
            "body": body,
        }
    )
    return JSONResponse({"id": request.path_params.get("id", ""), "size": len(body)})


async def events(_: Request) -> Response:
    async def stream() -> Any:
        for i in range(3):
            yield f"data: {i}\n\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(stream(), media_type="text/event-stream")


UPSTREAM = Starlette(
    routes=[
        Route("/api/v1/jobs/{id}", echo),
        Route("/api/v1/jobs/{id}/events", events),
        Route("/api/v1/blobs/{id}", echo, methods=["PUT"]),
        Route("/api/v1/workers", echo),
    ]
)


def upstream() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=UPSTREAM),
        base_url="http://coordinator/api/v1",
        headers={"authorization": "Bearer worker-secret"},
    )


def test_the_route_table_is_what_a_job_token_may_call() -> None:
    allowed = ROLE_OPS["job"]
    expected = {(e.method, e.path) for e in ENDPOINTS if e.handler.__name__ in allowed}
    assert set(JOB_TOKEN_ROUTES) == expected


@pytest.mark.parametrize(
    ("method", "target", "forwarded"),
    [
        ("GET", "/api/v1/jobs/abc123", "/jobs/abc123"),
        ("GET", "/api/v1/jobs/abc/events?detail=1", "/jobs/abc/events?detail=1"),
        ("POST", "/api/v1/jobs/abc/tasks", "/jobs/abc/tasks"),
        ("PUT", "/api/v1/blobs/" + "a" * 64, "/blobs/" + "a" * 64),
        ("POST", "/api/v1/jobs", None),  # a new job: not with a job token
        ("GET", "/api/v1/workers", None),
        ("DELETE", "/api/v1/jobs/abc", None),
        ("GET", "/api/v1/jobs/../workers", None),
        ("GET", "/api/v1/jobs/a%2F..%2Fworkers", None),
        ("GET", "/api/v1/jobs/abc/tasks/x", None),
        ("GET", "/healthz", None),
        ("GET", "/jobs/abc", None),
    ],
)
def test_relay_allows(method: str, target: str, forwarded: str | None) -> None:
    assert relay_allows(method, target) == forwarded


def test_needs_relay_only_where_the_sandbox_gives_no_network() -> None:
    sandboxed = SandboxPolicy("bwrap")
    networked = SandboxPolicy("bwrap", allow_network=True)
    assert needs_relay(sandboxed, {}) and needs_relay(sandboxed, {"network": "yes"})
    assert needs_relay(networked, {}) and not needs_relay(networked, {"network": "yes"})
    assert not needs_relay(SandboxPolicy(None), {})


def test_unix_urls_and_long_paths(tmp_path: Path) -> None:
    assert unix_path(unix_url("/a/b.sock")) == "/a/b.sock"
    assert unix_path("http://127.0.0.1:8470") is None
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    address = UnixAddress(str(deep / "api.sock"))
    try:
        assert address.short.startswith("/proc/self/fd/") and len(address.short) < 100
        assert os.path.samefile(Path(address.short).parent, deep)
    finally:
        address.close()
    short = UnixAddress("/tmp/x.sock")
    assert short.short == "/tmp/x.sock"


async def _through_relay(work: Path) -> tuple[str, list[Any]]:
    relay = Relay(upstream(), "crj_the-task-token")
    url = await relay.start(work)
    try:
        address = UnixAddress(unix_path(url) or "")
        transport = httpx.AsyncHTTPTransport(uds=address.short)
        async with httpx.AsyncClient(transport=transport, base_url="http://x/api/v1") as http:
            got = [await http.get("/jobs/j1", headers={"authorization": "Bearer admin!"})]
            got.append(await http.put("/blobs/b1", content=b"x" * 300_000))
            got.append(await http.get("/workers"))
            got.append(await http.post("/jobs", json={}))
            async with http.stream("GET", "/jobs/j1/events") as streamed:
                got.append([line async for line in streamed.aiter_lines() if line])
            got.append(await http.get("/jobs/j2"))  # the same connection, kept alive
        address.close()
        return url, got
    finally:
        await relay.close()


def test_relay_forwards_with_the_task_token_and_refuses_the_rest(tmp_path: Path) -> None:
    SEEN.clear()
    work = tmp_path / ("w" * 90) / "work"  # past what a socket address holds
    work.mkdir(parents=True)
    url, got = asyncio.run(_through_relay(work))
    socket = work / STATE_DIR / RELAY_SOCKET
    assert url == unix_url(str(socket))
    assert oct(socket.stat().st_mode & 0o777) == "0o600"
    job, blob, workers, create, streamed, again = got
    assert (job.status_code, job.json()) == (200, {"id": "j1", "size": 0})
    assert blob.json() == {"id": "b1", "size": 300_000}
    assert workers.status_code == 403 and "may not call GET /api/v1/workers" in workers.text
    assert create.status_code == 403
    assert streamed == ["data: 0", "data: 1", "data: 2"]
    assert again.json()["id"] == "j2"
    assert [s["path"] for s in SEEN] == ["/api/v1/jobs/j1", "/api/v1/blobs/b1", "/api/v1/jobs/j2"]
    assert {s["auth"] for s in SEEN} == {"Bearer crj_the-task-token"}


def test_the_client_reaches_a_unix_url(tmp_path: Path) -> None:
    work = tmp_path / ("c" * 90) / "work"
    work.mkdir(parents=True)

    async def run() -> dict[str, Any]:
        relay = Relay(upstream(), "crj_token")
        url = await relay.start(work)
        try:
            client = Client(url, "ignored")

            def get() -> dict[str, Any]:
                with client:
                    reply = client._http.get("/jobs/j9")
                    return dict(reply.json())

            return await asyncio.to_thread(get)
        finally:
            await relay.close()

    assert asyncio.run(run()) == {"id": "j9", "size": 0}
