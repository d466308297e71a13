"""Serving a stored blob: the whole file, in big chunks read one ahead of the socket."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from corral.coordinator.blobs import BlobResponse


def app_for(path: Path) -> Starlette:
    async def blob(request: Request) -> BlobResponse:
        return BlobResponse(path)

    return Starlette(routes=[Route("/blob", blob, methods=["GET", "HEAD"])])


def fetch(path: Path, method: str = "GET") -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_for(path))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, "/blob")

    return asyncio.run(main())


@pytest.mark.parametrize("size", [0, 1, 4 << 20, (9 << 20) + 123])
def test_serves_the_whole_file(tmp_path: Path, size: int) -> None:
    path = tmp_path / "blob"
    data = os.urandom(size)
    path.write_bytes(data)
    before = len(os.listdir("/proc/self/fd"))
    response = fetch(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-length"] == str(size)
    assert response.content == data
    assert len(os.listdir("/proc/self/fd")) <= before


def test_head_sends_no_body(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 5000)
    response = fetch(path, "HEAD")
    assert response.status_code == 200
    assert response.headers["content-length"] == "5000"
    assert response.content == b""


def test_stops_reading_once_the_client_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(40 << 20))  # ten chunks
    bodies: list[int] = []
    incoming = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop()
        return {"type": "http.disconnect"}  # the worker died right after asking

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(len(message["body"]))
        await asyncio.sleep(0.01)  # a slow network: the disconnect is seen meanwhile

    scope = {"type": "http", "method": "GET"}
    asyncio.run(BlobResponse(path)(scope, receive, send))
    assert 0 < len(bodies) < 10
