"""The dashboard in process: httpx over ASGI against build_app, and its pure parts (CSRF,
paging, the timeline's layout) without any request. The browser tests are in
tests/integration/test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.coordinator import Settings, build_app
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.dashboard import session, timeline, views
from corral.coordinator.dashboard.submit import FormProblem, Upload, build
from corral.coordinator.store import SQLiteStore, TaskSpan
from corral.jobfile import JobFileError
from corral.protocol import Job, Task

ADMIN = "admin-secret"
ROOT = "http://corral.test"

Body = Callable[["Ui"], Awaitable[None]]


class Ui:
    """A browser-like client (cookies kept) and an API client, on one in-process app."""

    def __init__(self, http: httpx.AsyncClient, api: httpx.AsyncClient, store: SQLiteStore) -> None:
        self.http = http
        self.api = api
        self.store = store

    async def login(self, secret: str = ADMIN) -> httpx.Response:
        return await self.http.post("/ui/login", data={"token": secret, "next": "/ui/"})

    async def csrf(self, path: str = "/ui/") -> str:
        page = await self.http.get(path)
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert found, page.text
        return found.group(1)

    async def post(self, path: str, **data: str) -> httpx.Response:
        return await self.http.post(path, data={"csrf": await self.csrf(), **data})

    async def submit(self, *argvs: list[str], token: str = ADMIN) -> dict[str, Any]:
        tasks = [{"argv": a} for a in argvs]
        r = await self.api.post(
            "/api/v1/jobs", json={"tasks": tasks}, headers={"authorization": f"Bearer {token}"}
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def token(self, role: str, name: str) -> str:
        r = await self.api.post("/api/v1/tokens", json={"name": name, "role": role})
        return str(r.json()["secret"])


def run(tmp_path: Path, body: Body) -> None:
    async def main() -> None:
        settings = Settings(data_dir=tmp_path, tokens={ADMIN: "root"})
        store = SQLiteStore(settings.db_path)
        app = build_app(settings, store, LocalBlobs(settings.blob_dir))
        transport = httpx.ASGITransport(app=app)
        try:
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url=ROOT) as http,
                httpx.AsyncClient(
                    transport=transport,
                    base_url=ROOT,
                    headers={"authorization": f"Bearer {ADMIN}"},
                ) as api,
            ):
                await asyncio.wait_for(body(Ui(http, api, store)), 30)
        finally:
            store.close()

    asyncio.run(main())


# logging in and out


def test_root_redirects_and_pages_want_a_session(tmp_path: Path) -> None:
    async def body(ui: Ui) -> None:
        r = await ui.http.get("/")
        assert (r.status_code, r.headers["location"]) == (303, "/ui/")
        r = await ui.http.get("/ui/jobs/x")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/jobs/x"
        r = await ui.http.get("/ui/login")
        assert r.status_code == 200 and '<label for="token">Token</label>' in r.text
        r = await ui.http.post("/ui/tasks/x/kill", data={"csrf": "x"})
        assert r.status_code == 401 and "log in again" in r.text

    run(tmp_path, body)


def test_login_sets_a_strict_httponly_cookie_and_logout_ends_it(tmp_path: Path) -> None:
    async def body(ui: Ui) -> None:
        r = await ui.login("wrong")
        assert r.status_code == 401 and "unknown token" in r.text
        r = await ui.login()
        assert r.status_code == 303 and r.headers["location"] == "/ui/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
        assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure
        assert ADMIN not in r.headers["location"]
        page = await ui.http.get("/ui/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "<script>" not in page.text and "style=" not in page.text
        r = await ui.post("/ui/logout")
        assert r.status_code == 303 and "Max-Age=0" in r.headers["set-cookie"]
        assert (await ui.http.get("/ui/")).status_code == 303

    run(tmp_path, body)


def test_a_login_goes_back_only_to_the_dashboard(tmp_path: Path) -> None:
    async def body(ui: Ui) -> None:
        for target, want in (("/ui/workers", "/ui/workers"), ("//evil.example/", "/ui/")):
            r = await ui.http.post("/ui/login", data={"token": ADMIN, "next": target})
            assert r.headers["location"] == want
        r = await ui.http.post("/ui/login", data={"token": ADMIN, "next": "https://evil.example"})
        assert r.headers["location"] == "/ui/"

    run(tmp_path, body)


def test_a_post_without_the_csrf_token_is_refused(tmp_path: Path) -> None:
    async def body(ui: Ui) -> None:
        job = await ui.submit(["sleep", "30"])
        await ui.login()
        for data in ({}, {"csrf": "0" * 64}, {"csrf": "", "confirm": "yes"}):
            r = await ui.http.post(f"/ui/jobs/{job['id']}/kill", data={**data, "confirm": "yes"})
            assert r.status_code == 403 and "CSRF" in r.text
        assert ui.store.get_job(job["id"]).status == "queued"

    run(tmp_path, body)


# pages


def test_pages_show_jobs_tasks_and_workers(tmp_path: Path) -> None:
    async def body(ui: Ui) -> None:
        job = await ui.submit(["echo", "a"], ["echo", "b"])
        r = await ui.api.post("/api/v1/workers", json={"name": "w1", "slots": 2})
        worker = r.json()["id"]
        await ui.login()
        page = (await ui.http.get("/ui/")).text
        assert f'data-job-id="{job["id"]}"' in page and "2 queued" in page
        page = (await ui.http.get(f"/ui/jobs/{job['id']}")).text
        assert page.count('data-status="queued"') == 2
        assert "Kill" in page and "Retry failed" not in page
        assert 'class="timeline"' in page
        task_id = job["task_ids"][0]
        page = (await ui.http.get(f"/ui/tasks/{task_id}")).text
        assert "echo a" in page and "stdout" in page and "stderr" in page
        page = (await ui.http.get("/ui/workers")).text
        assert f'data-worker-id="{worker}"' in page and "0/2" in page and "s ago" in page
        assert "data-live" in page and "Drain" in page
        page = (await ui.http.get("/ui/admin")).text
        assert "job.submit" in page and "Create token" in page
        for bad in ("/ui/?status=nope", "/ui/jobs/nope", f"/ui/jobs/{job['id']}?after=x"):
            r = await ui.http.get(bad)
            assert r.status_code in (400, 404) and "Refused" in r.text

    run(tmp_path, body)


def test_kill_asks_to_confirm_then_kills_and_is_audited(tmp_path: Path) -> None:
    async def body(ui: Ui) -> None:
        job = await ui.submit(["sleep", "30"])
        await ui.login()
        r = await ui.post(f"/ui/jobs/{job['id']}/kill")
        assert r.status_code == 200 and 'name="confirm" value="yes"' in r.text
        assert ui.store.get_job(job["id"]).status == "queued"
        r = await ui.post(f"/ui/jobs/{job['id']}/kill", confirm="yes")
        assert r.status_code == 303
        assert ui.store.get_job(job["id"]).status == "killed"
        assert ui.store.audit_newest(1)[0].action == "job.kill"

    run(tmp_path, body)


def test_retry_failed_and_drain_go_through_the_service(tmp_path: Path) -> None:
    async def body(ui: Ui) -> None:
        job = await ui.submit(["false"])
        worker = (await ui.api.post("/api/v1/workers", json={"name": "w", "slots": 1})).json()
        grant = (
            await ui.api.post(f"/api/v1/workers/{worker['id']}/lease", json={"max": 1})
        ).json()["assignments"][0]
        await ui.api.post(
            f"/api/v1/tasks/{grant['task_id']}/result",
            json={"lease_id": grant["lease_id"], "exit_code": 1},
        )
        await ui.login()
        assert "Retry failed" in (await ui.http.get(f"/ui/jobs/{job['id']}")).text
        r = await ui.post(f"/ui/jobs/{job['id']}/retry", confirm="yes")
        assert r.status_code == 303 and ui.store.get_job(job["id"]).status == "queued"
        r = await ui.post(f"/ui/workers/{worker['id']}/drain", confirm="yes")
        assert r.status_code == 303
        assert ui.store.get_worker(worker["id"]).status == "draining"
        actions = [e.action for e in ui.store.audit_newest(2)]
        assert actions == ["worker.drain", "job.retry"]
        assert ui.store.evictions(worker["id"]) == []  # a plain drain lets tasks finish


def test_evict_drains_a_worker_and_evicts_its_running_tasks(tmp_path: Path) -> None:
    async def body(ui: Ui) -> None:
        await ui.submit(["sleep", "100"])
        worker = (await ui.api.post("/api/v1/workers", json={"name": "w", "slots": 1})).json()
        grant = (
            await ui.api.post(f"/api/v1/workers/{worker['id']}/lease", json={"max": 1})
        ).json()["assignments"][0]
        await ui.login()
        page = (await ui.http.get("/ui/workers")).text
        assert f"/ui/workers/{worker['id']}/evict" in page
        r = await ui.post(f"/ui/workers/{worker['id']}/evict")
        assert r.status_code == 200 and "checkpointed and requeued" in r.text  # confirm first
        r = await ui.post(f"/ui/workers/{worker['id']}/evict", confirm="yes")
        assert r.status_code == 303
        assert ui.store.get_worker(worker["id"]).status == "draining"
        assert ui.store.evictions(worker["id"]) == [grant["lease_id"]]
        entry = ui.store.audit_newest(1)[0]
        assert (entry.action, entry.detail) == ("worker.drain", "dashboard, evict")

    run(tmp_path, body)

    run(tmp_path, body)


def test_a_submit_token_sees_and_acts_on_its_own_jobs_only(tmp_path: Path) -> None:
    async def body(ui: Ui) -> None:
        alice = await ui.token("submit", "alice")
        bob = await ui.token("submit", "bob")
        theirs = await ui.submit(["sleep", "30"], token=alice)
        mine = await ui.submit(["sleep", "30"], token=bob)
        await ui.login(bob)
        page = (await ui.http.get("/ui/?owner=alice")).text
        assert mine["id"] in page and theirs["id"] not in page
        r = await ui.http.get(f"/ui/jobs/{theirs['id']}")
        assert r.status_code == 403 and "is not yours" in r.text
        r = await ui.http.get(f"/ui/tasks/{theirs['task_ids'][0]}")
        assert r.status_code == 403
        r = await ui.post(f"/ui/jobs/{theirs['id']}/kill", confirm="yes")
        assert r.status_code == 403 and ui.store.get_job(theirs["id"]).status == "queued"
        assert (await ui.http.get("/ui/admin")).status_code == 403
        r = await ui.post(f"/ui/jobs/{mine['id']}/kill", confirm="yes")
        assert r.status_code == 303 and ui.store.get_job(mine["id"]).status == "killed"

    run(tmp_path, body)


def test_submit_form_with_lines_and_a_file(tmp_path: Path) -> None:
    async def body(ui: Ui) -> None:
        await ui.login()
        csrf = await ui.csrf("/ui/submit")
        form = {"csrf": csrf, "command": "grep -c {} words.txt", "lines": "a\n\nb\n"}
        files = {"files": ("words.txt", b"a\nb\nab\n", "text/plain")}
        r = await ui.http.post("/ui/submit", data=form, files=files)
        assert r.status_code == 303, r.text
        job_id = r.headers["location"].rsplit("/", 1)[-1]
        tasks = ui.store.tasks_page(job_id, None)
        assert [t.argv for t in tasks] == [
            ["grep", "-c", "a", "words.txt"],
            ["grep", "-c", "b", "words.txt"],
        ]
        assert set(tasks[0].inputs) == {"words.txt"}
        assert ui.store.owned_blobs("root", [tasks[0].inputs["words.txt"].sha256])

    run(tmp_path, body)


def test_a_bad_form_or_job_file_is_shown_and_stores_nothing(tmp_path: Path) -> None:
    async def body(ui: Ui) -> None:
        await ui.login()
        csrf = await ui.csrf("/ui/submit")
        bad_file = ("job.toml", b'[[tasks]]\nargv = ["x"]\nmax_attempts = "many"\n', "text/plain")
        cases = [
            ({"command": ""}, None, "command: give a command line"),
            ({"command": "echo 'open"}, None, "command: No closing quotation"),
            ({"command": "echo", "limits": "memory=lots"}, None, "limits: memory=lots"),
            ({"command": "echo", "max_attempts": "0"}, None, "max_attempts"),
            ({"command": ""}, {"jobfile": bad_file}, "job.toml:3: tasks[0].max_attempts"),
        ]
        for data, files, problem in cases:
            r = await ui.http.post("/ui/submit", data={"csrf": csrf, **data}, files=files)
            assert r.status_code == 422 and problem in r.text, (problem, r.text)
        assert ui.store.list_jobs(10) == []

    run(tmp_path, body)


# pure parts


def test_csrf_tokens_belong_to_their_session() -> None:
    key = b"k" * 32
    token = session.csrf_token(key, "secret-a")
    assert session.csrf_ok(key, "secret-a", token)
    assert not session.csrf_ok(key, "secret-b", token)
    assert not session.csrf_ok(b"j" * 32, "secret-a", token)
    assert not session.csrf_ok(key, "secret-a", None) and not session.csrf_ok(key, "secret-a", "")
    assert "Secure" in session.session_cookie("s", secure=True)
    assert "Secure" not in session.session_cookie("s", secure=False)


def _task(seq: int) -> Task:
    return Task(
        f"t{seq}", "j", seq, "", "queued", [], {}, {}, [], {}, {}, False, 0, 3, None, None,
        None, None, None, {}, 0.0, None, None,
    )  # fmt: skip


def test_keyset_page_cursors() -> None:
    rows = [_task(i) for i in range(11)]
    first = views.keyset_page(rows, 10, None, None)
    assert [t.seq for t in first.rows] == list(range(10))
    assert (first.prev_before, first.next_after) == (None, 9)
    last = views.keyset_page(rows[5:], 10, 4, None)
    assert (len(last.rows), last.prev_before, last.next_after) == (6, 5, None)
    back = views.keyset_page(rows, 10, None, 11)  # read backwards: one more than a page
    assert [t.seq for t in back.rows] == list(range(1, 11))
    assert (back.prev_before, back.next_after) == (1, 10)
    start = views.keyset_page(rows[:3], 10, None, 3)
    assert (start.prev_before, start.next_after) == (None, 2)
    assert views.keyset_page([], 10, None, None) == views.Page([], None, None)


def test_timeline_gives_each_worker_as_many_lanes_as_it_ran_at_once() -> None:
    spans = [
        TaskSpan("a", 0, "succeeded", "w1", 0.0, 10.0),
        TaskSpan("b", 1, "failed", "w1", 1.0, 4.0),
        TaskSpan("c", 2, "succeeded", "w1", 5.0, 9.0),  # reuses b's lane
        TaskSpan("d", 3, "running", "w2", 2.0, None),  # runs until now
    ]
    layout = timeline.lay_out(spans, 20.0, {"w1": "alpha", "w2": "beta"})
    assert layout.lanes == [("alpha", 1), ("alpha", 2), ("beta", 1)]
    assert [(b.task_id, b.lane) for b in layout.bars] == [("a", 0), ("b", 1), ("c", 1), ("d", 2)]
    assert (layout.t0, layout.t1) == (0.0, 20.0)
    d = layout.bars[-1]
    assert (d.start, d.end, d.seconds) == (0.1, 1.0, 18.0)
    picture = timeline.svg(layout)
    assert picture.count("<rect") == 4 and "task d: running, 18.0 s" in picture
    assert 'href="/ui/tasks/a"' in picture and "alpha #2" in picture
    assert timeline.lay_out([], 5.0, {}).bars == []
    assert "<svg" in timeline.svg(timeline.lay_out([], 5.0, {}))


def test_views_words_and_numbers() -> None:
    assert [views.ago(s) for s in (3.2, 200, 9000, 400000)] == [
        "3 s ago", "3 min ago", "2 h ago", "4 d ago"
    ]  # fmt: skip
    assert [views.duration(s) for s in (None, 0.42, 12, 185, 7800)] == [
        "", "0.4 s", "12 s", "3 min 5 s", "2 h 10 min"
    ]  # fmt: skip
    assert views.per_minute([100.0, 95.0, 30.0, -500.0], 100.0, 3) == [0, 1, 2]
    job = Job("j", "", "a", "running", 0.0, {"succeeded": 1, "running": 1, "queued": 2}, 4)
    assert views.progress(job) == [
        ("succeeded", 1, 25.0),
        ("running", 1, 25.0),
        ("queued", 2, 50.0),
    ]
    assert views.sparkline([0, 5]) == "0.0,23.0 120.0,1.0"


def test_build_refuses_before_storing_anything() -> None:
    upload = Upload("data.txt", b"hello")
    name, specs = build({"command": "wc -c data.txt", "name": ""}, [upload], None)
    assert name == "wc" and specs[0].inputs["data.txt"].size == 5
    with pytest.raises(FormProblem, match="requires: write KEY=VALUE"):
        build({"command": "x", "requires": "cpus"}, [], None)
    job = Upload("j.json", b'{"tasks": [{"argv": ["x"], "inputs": ["in/data.txt"]}]}')
    _, specs = build({}, [upload], job)
    assert set(specs[0].inputs) == {"in/data.txt"}
    with pytest.raises(FormProblem, match="missing.txt was not uploaded"):
        build({}, [], Upload("j.json", b'{"tasks": [{"argv": ["x"], "inputs": ["missing.txt"]}]}'))
    with pytest.raises(JobFileError, match="j.toml:1"):
        build({}, [], Upload("j.toml", b"tasks = 3\n"))
