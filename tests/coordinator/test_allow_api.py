"""The allowlist API (/api/v1/allow) and limit validation, in process over ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from corral.coordinator import Settings, build_app
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.store import SQLiteStore
from corral.protocol import LIMIT_KEYS

ADMIN = "admin-token"
HEX = "ab" * 32


def run(tmp_path: Path, body: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    async def main() -> None:
        settings = Settings(data_dir=tmp_path, tokens={ADMIN: "root"})
        store = SQLiteStore(settings.db_path)
        try:
            app = build_app(settings, store, LocalBlobs(settings.blob_dir))
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://corral.test/api/v1",
                    headers={"authorization": f"Bearer {ADMIN}"},
                ) as http,
            ):
                await asyncio.wait_for(body(http), 30)
        finally:
            store.close()

    asyncio.run(main())


async def token(http: httpx.AsyncClient, role: str) -> dict[str, str]:
    r = await http.post("/tokens", json={"name": f"a {role}", "role": role})
    assert r.status_code == 201, r.text
    return {"authorization": f"Bearer {r.json()['secret']}"}


def test_admin_adds_lists_and_removes(tmp_path: Path) -> None:
    async def body(http: httpx.AsyncClient) -> None:
        r = await http.post("/allow", json={"sha256": f"sha256:{HEX.upper()}", "note": "sh"})
        assert r.status_code == 201, r.text
        assert (r.json()["sha256"], r.json()["note"], r.json()["added_by"]) == (HEX, "sh", "root")
        again = await http.post("/allow", json={"sha256": HEX})
        assert again.status_code == 200  # already there: nothing changes
        assert [e["sha256"] for e in (await http.get("/allow")).json()] == [HEX]
        assert (await http.delete(f"/allow/sha256:{HEX}")).status_code == 204
        assert (await http.get("/allow")).json() == []
        gone = await http.delete(f"/allow/{HEX}")
        assert (gone.status_code, gone.json()["error"]) == (404, "not_found")
        actions = [e["action"] for e in (await http.get("/audit")).json()]
        assert actions[-2:] == ["allow.add", "allow.remove"]

    run(tmp_path, body)


def test_an_entry_says_whether_inline_code_is_allowed(tmp_path: Path) -> None:
    async def body(http: httpx.AsyncClient) -> None:
        r = await http.post("/allow", json={"sha256": HEX, "note": "python"})
        assert (r.status_code, r.json()["allow_inline"]) == (201, False)
        r = await http.post("/allow", json={"sha256": HEX, "allow_inline": True})
        assert (r.status_code, r.json()["allow_inline"], r.json()["note"]) == (201, True, "python")
        r = await http.post("/allow", json={"sha256": HEX, "allow_inline": True})
        assert r.status_code == 200  # nothing changed
        assert [e["allow_inline"] for e in (await http.get("/allow")).json()] == [True]
        r = await http.post("/allow", json={"sha256": HEX})  # added again without: taken back
        assert (r.status_code, r.json()["allow_inline"]) == (201, False)
        actions = [e["action"] for e in (await http.get("/audit")).json()]
        assert actions[-3:] == ["allow.add", "allow.add_inline", "allow.add"]

    run(tmp_path, body)


def test_bad_hashes_and_bodies_are_422(tmp_path: Path) -> None:
    async def body(http: httpx.AsyncClient) -> None:
        for bad in ("", "abc", "sha256:" + "g" * 64, "md5:" + HEX):
            r = await http.post("/allow", json={"sha256": bad})
            assert (r.status_code, r.json()["error"]) == (422, "invalid_argument"), bad
        r = await http.post("/allow", json={"sha256": HEX, "colour": "red"})
        assert (r.status_code, r.json()["error"]) == (422, "invalid_body")
        r = await http.post("/allow", json={"sha256": HEX, "note": "x\x00y"})
        assert r.status_code == 422
        r = await http.delete("/allow/nothex")
        assert r.status_code == 422

    run(tmp_path, body)


def test_workers_read_the_list_and_only_admins_change_it(tmp_path: Path) -> None:
    async def body(http: httpx.AsyncClient) -> None:
        await http.post("/allow", json={"sha256": HEX})
        worker, submitter = await token(http, "worker"), await token(http, "submit")
        assert (await http.get("/allow", headers=worker)).status_code == 200
        for headers in (worker, submitter):
            r = await http.post("/allow", json={"sha256": "cd" * 32}, headers=headers)
            assert r.status_code == 403
            assert (await http.delete(f"/allow/{HEX}", headers=headers)).status_code == 403
        assert (await http.get("/allow", headers=submitter)).status_code == 403
        assert (await http.get("/allow", headers={"authorization": ""})).status_code == 401

    run(tmp_path, body)


def test_unknown_limit_keys_are_422_with_the_known_ones(tmp_path: Path) -> None:
    async def body(http: httpx.AsyncClient) -> None:
        task = {"argv": ["true"], "limits": {"memory": 1e6, "cpu_seconds": 5}}
        r = await http.post("/jobs", json={"tasks": [task]})
        assert (r.status_code, r.json()["error"]) == (422, "invalid_argument")
        assert "cpu_seconds" in r.json()["detail"]
        assert all(key in r.json()["detail"] for key in LIMIT_KEYS)
        ok = {"argv": ["true"], "limits": dict.fromkeys(LIMIT_KEYS, 1.0)}
        assert (await http.post("/jobs", json={"tasks": [ok]})).status_code == 201

    run(tmp_path, body)
