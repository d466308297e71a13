"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real
farm: a `corral server` and `corral worker` processes on loopback.

Playwright's own browser download is never used: the tests point it at /usr/bin/chromium
(`apt-get install chromium`; .ci/run installs it). Without it they skip here and fail in CI.
Screenshots of each page go to the test's temporary directory (`screens/`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from corral.protocol import TaskSpec

from .conftest import Farm, wait_for

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 20_000  # any one thing the page must show, in milliseconds

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium for the module (each test gets its own context: its own cookies)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; CI must install chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    with playwright_api.sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield found
        finally:
            found.close()


@pytest.fixture
def page_for(browser: Any) -> Iterator[Callable[..., Any]]:
    """`page_for(farm, token, width=1280)`: a logged-in page in a fresh browser context."""
    contexts: list[Any] = []

    def make(farm: Farm, token: str, width: int = 1280) -> Any:
        context = browser.new_context(
            viewport={"width": width, "height": 900}, accept_downloads=True, base_url=farm.url
        )
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.goto("/")
        assert page.url.endswith("/ui/login?next=/ui/")
        page.get_by_label("Token").fill(token)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/ui/")
        return page

    yield make
    for context in contexts:
        context.close()


def shot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / "screens" / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sh(script: str, **kw: object) -> TaskSpec:
    return TaskSpec(argv=["sh", "-c", script], **kw)  # type: ignore[arg-type]


def api(farm: Farm, token: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token or farm.token}"}
    return httpx.Client(base_url=farm.url + "/api/v1", headers=headers, timeout=10.0)


@pytest.mark.timeout(90)
def test_live_progress_failed_filter_stderr_download_and_drain(
    farm: Callable[..., Farm], page_for: Callable[..., Any], tmp_path: Path
) -> None:
    f = farm(workers=2, slots=2)
    page = page_for(f, f.token)
    assert page.evaluate("document.activeElement.tagName") == "BODY"
    page.keyboard.press("Tab")  # the first stop is the skip link: keyboard users get past nav
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    with f.client() as client:  # submitted after the page is open: it must appear by itself
        tasks = [sh(f"sleep 1.5; echo result-{i} > out.txt") for i in range(5)]
        tasks.append(sh("sleep 0.5; echo boom-on-stderr >&2; exit 3", max_attempts=1))
        job = client.submit_job(tasks, "browser-demo")
    row = page.locator(f'tr[data-job-id="{job.id}"]')
    row.wait_for()
    page.locator(f'tr[data-job-id="{job.id}"][data-status="failed"]').wait_for()
    assert "5 ok · 1 failed · 0 running · 0 queued" in row.inner_text()
    assert page.url.endswith("/ui/")  # no reload: the same page, refreshed in place
    shot(page, tmp_path, "jobs")

    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than it
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, tmp_path, "jobs-390")
    page.set_viewport_size({"width": 1280, "height": 900})

    row.get_by_role("link", name="browser-demo").click()
    page.wait_for_url(f"**/ui/jobs/{job.id}")
    assert page.locator("tr[data-task-id]").count() == 6
    assert page.locator("svg.timeline rect").count() == 6
    shot(page, tmp_path, "job")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**status=failed")
    failed = page.locator("tr[data-task-id]")
    assert failed.count() == 1 and failed.get_attribute("data-status") == "failed"
    failed.get_by_role("link").click()
    page.locator("#stderr").wait_for()
    assert "boom-on-stderr" in page.locator("#stderr").inner_text()
    assert "exit code 3" in page.locator(".why").inner_text()

    ok = next(t for t in client_tasks(f, job.id) if t["status"] == "succeeded")
    page.goto(f"/ui/tasks/{ok['id']}")
    with page.expect_download() as download:
        page.get_by_role("link", name="out.txt").click()
    saved = tmp_path / "out.txt"
    download.value.save_as(saved)
    assert re.fullmatch(r"result-\d\n", saved.read_text())
    shot(page, tmp_path, "task")

    page.get_by_role("link", name="Workers").click()
    worker = f.workers[1]
    wrow = page.locator(f'tr[data-worker-id="{worker.id}"]')
    assert "s ago" in wrow.inner_text() and "online" in wrow.inner_text()
    shot(page, tmp_path, "workers")
    wrow.get_by_role("button", name="Drain").click()
    page.get_by_role("button", name="Drain").click()  # the confirm page
    page.wait_for_url("**/ui/workers")
    page.locator(f'tr[data-worker-id="{worker.id}"][data-status="gone"]').wait_for()
    assert worker.proc.wait(10) == 0  # drained: it left on its own


def client_tasks(farm: Farm, job_id: str) -> list[dict[str, Any]]:
    with api(farm) as http:
        return list(http.get(f"/jobs/{job_id}/tasks").json())


@pytest.mark.timeout(90)
def test_submit_a_file_from_the_form_and_kill_a_running_sleep(
    farm: Callable[..., Farm], page_for: Callable[..., Any], tmp_path: Path
) -> None:
    f = farm(workers=1, slots=2)
    page = page_for(f, f.token)
    page.get_by_role("link", name="Submit", exact=True).click()
    data = tmp_path / "words.txt"
    data.write_text("one\ntwo\nthree\n")
    page.get_by_label("Command line").fill("grep -c {} words.txt")
    page.get_by_label("One task per line").fill("o\nt\n")
    page.locator("#s-files").set_input_files(str(data))
    shot(page, tmp_path, "submit")
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url("**/ui/jobs/*")
    page.locator('tr[data-task-id][data-status="succeeded"]').nth(1).wait_for()
    job_id = page.url.rsplit("/", 1)[-1]
    outs = sorted(
        httpx_log(f, t["id"]) for t in client_tasks(f, job_id) if t["status"] == "succeeded"
    )
    assert outs == ["2\n", "2\n"]  # "o" in one, two; "t" in two, three

    with f.client() as client:
        job = client.submit_job([TaskSpec(argv=["sleep", "300"])], "sleeper")
    task_id = job.task_ids[0]
    page.goto(f"/ui/tasks/{task_id}")
    page.locator('#facts[data-status="running"]').wait_for()
    sleeps = wait_for(lambda: sleeping(f), 10, what="sleep 300 to start")
    page.get_by_role("button", name="Kill").click()
    page.get_by_role("button", name="Kill").click()  # the confirm page
    page.locator('#facts[data-status="killed"]').wait_for()
    assert "killed" in page.locator(".why").inner_text()
    wait_for(lambda: all(not p.is_running() for p in sleeps), 10, what="sleep to be gone")
    assert sleeping(f) == []


def httpx_log(farm: Farm, task_id: str) -> str:
    with api(farm) as http:
        return http.get(f"/tasks/{task_id}/log").text


def sleeping(farm: Farm) -> list[psutil.Process]:
    """`sleep 300` processes under this farm's workers (never anyone else's)."""
    found = []
    for worker in farm.workers:
        try:
            kids = psutil.Process(worker.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for p in kids:
            try:
                if p.cmdline()[-2:] == ["sleep", "300"] and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.Error:
                pass
    return found


@pytest.mark.timeout(60)
def test_a_submit_token_is_refused_anothers_job_csrf_and_after_logout(
    farm: Callable[..., Farm], page_for: Callable[..., Any], tmp_path: Path
) -> None:
    f = farm(workers=0)
    with api(f) as admin:
        alice, bob = (
            admin.post("/tokens", json={"name": n, "role": "submit"}).json()["secret"]
            for n in ("alice", "bob")
        )
    with api(f, alice) as http:
        theirs = http.post("/jobs", json={"tasks": [{"argv": ["true"]}]}).json()
    page = page_for(f, bob, width=390)
    assert page.locator(f'tr[data-job-id="{theirs["id"]}"]').count() == 0
    answer = page.goto(f"/ui/jobs/{theirs['id']}")
    assert answer is not None and answer.status == 403
    assert "is not yours" in page.locator("[data-error]").inner_text()
    page.goto("/ui/submit")
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    kill = f"/ui/jobs/{theirs['id']}/kill"
    refused = page.request.post(kill, form={"csrf": csrf or "", "confirm": "yes"})
    assert refused.status == 403 and "is not yours" in refused.text()
    forged = page.request.post(f"/ui/tasks/{theirs['task_ids'][0]}/kill", form={"confirm": "yes"})
    assert forged.status == 403 and "CSRF" in forged.text()
    with api(f) as admin:
        assert admin.get(f"/jobs/{theirs['id']}").json()["status"] == "queued"
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/ui/login")
    page.goto("/ui/")
    assert "/ui/login" in page.url
    gone = page.request.post(kill, form={"csrf": csrf or "", "confirm": "yes"})
    assert gone.status == 401


def test_screenshots_are_where_the_readme_says(tmp_path: Path) -> None:
    """docs/ holds two of the screenshots the browser tests take; the README shows them."""
    docs = Path(__file__).parents[2] / "docs"
    readme = (docs.parent / "README.md").read_text()
    for name in ("dashboard-jobs.png", "dashboard-job.png"):
        assert (docs / name).stat().st_size > 10_000
        assert f"docs/{name}" in readme
    assert shutil.which("true")
