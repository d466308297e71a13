"""GET /metrics in process: the text parses, its numbers follow the farm, and who may read it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_api import ROOT, Api, check_error_shape, echo, run_api

from corral.coordinator.access import may_call
from corral.coordinator.guards import Principal

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: httpx.AsyncClient) -> Samples:
    r = await http.get(ROOT + "/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., None]:
    """serve(body, **settings): run `body(api)` against a fresh coordinator."""
    return functools.partial(run_api, tmp_path)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_figures_follow_submit_lease_and_result(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        before = await scrape(api.http)
        assert total(before, "corral_tasks_queued") == 0
        assert total(before, "corral_slots_total") == 0
        await api.upload(b"x" * 1000)
        await api.submit(
            echo("a"), echo("b"), echo("c"), {**echo("g"), "requires": {"label.gpu": "yes"}}
        )
        worker = await api.register(slots=4)
        leased = await api.lease(worker, max=2)
        assert len(leased) == 2
        mid = await scrape(api.http)
        assert total(mid, "corral_tasks_queued", owner="alice") == 2
        assert total(mid, "corral_tasks_running", owner="alice") == 2
        assert len({ls for n, ls in mid if n == "corral_tasks_queued"}) == 2  # two classes
        assert total(mid, "corral_workers", status="online") == 1
        assert total(mid, "corral_slots_busy") == 2
        assert total(mid, "corral_slots_total") == 4
        assert total(mid, "corral_blob_store_bytes") == 1000
        assert total(mid, "corral_task_queue_wait_seconds_count") == 2
        assert total(mid, "corral_request_seconds_count", request="lease") == 1
        first, second = leased
        r = await api.result(first["task_id"], first["lease_id"], exit_code=0)
        assert r.status_code == 200, r.text
        r = await api.result(second["task_id"], second["lease_id"], exit_code=3)
        assert r.status_code == 200, r.text
        after = await scrape(api.http)
        assert total(after, "corral_task_results_total", outcome="succeeded") == 1
        assert total(after, "corral_task_results_total", outcome="failed") == 1
        assert total(after, "corral_task_run_seconds_count") == 2
        assert total(after, "corral_request_seconds_count", request="result") == 2
        assert total(after, "corral_tasks_running") == 0
        assert total(after, "corral_slots_busy") == 0

    serve(body)


def test_metrics_needs_a_token_with_the_right_role(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        made = {}
        for role in ("metrics", "submit"):
            r = await api.http.post("/tokens", json={"name": f"{role}-1", "role": role})
            assert r.status_code == 201, r.text
            made[role] = r.json()["secret"]
        hooks = {"response": [check_error_shape]}
        for secret, status in [(None, 401), ("wrong", 401), (made["submit"], 403)]:
            headers = {"authorization": f"Bearer {secret}"} if secret else {}
            async with httpx.AsyncClient(
                transport=api.transport, headers=headers, event_hooks=hooks
            ) as other:
                r = await other.get(ROOT + "/metrics")
                assert r.status_code == status, r.text
        headers = {"authorization": f"Bearer {made['metrics']}"}
        async with httpx.AsyncClient(
            transport=api.transport, headers=headers, event_hooks=hooks
        ) as prom:
            assert "corral_slots_total" in {n for n, _ in await scrape(prom)}
            r = await prom.get(ROOT + "/api/v1/jobs")  # a metrics token reads nothing else
            assert r.status_code == 403

    serve(body)


def test_metrics_public_opens_only_metrics(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        async with httpx.AsyncClient(transport=api.transport) as anon:
            assert (await anon.get(ROOT + "/metrics")).status_code == 200
            assert (await anon.get(ROOT + "/api/v1/jobs")).status_code == 401

    serve(body, metrics_public=True)


def test_metrics_role() -> None:
    reader = Principal("t", "prom", "metrics", "prom")
    assert may_call(reader, "metrics") and not may_call(reader, "list_jobs")
    assert not may_call(Principal("t", "a", "submit", "a"), "metrics")
    assert may_call(Principal("t", "root", "admin", "root"), "metrics")
