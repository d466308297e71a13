"""Numbers out of range are bad input, not a crash: every integer and float the API takes, in a
body or a query, answers 422 `invalid_argument` naming the field and its range when sent past
64 bits, negative where it may not be, or just past its bound; nothing is created or changed.
And the edges themselves are accepted and stored. On both store backends, in process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_api import Api, run_api
from test_store_contract import BACKENDS, Backend, require_postgres

from corral.protocol import INT32_MAX, INT64_MAX, MAX_LIMIT, MAX_SECONDS

DATA = b"payload"
SHA = hashlib.sha256(DATA).hexdigest()
# past 64 bits either way, and just past a signed 64-bit integer
HUGE = [str(2**64), str(-(2**64)), str(2**63)]
NEGATIVE = [*HUGE, "-1"]
FLOATS = [*NEGATIVE, "1e400", "-1e400"]  # 1e400 is infinity to a float parser
Ids = dict[str, str]


@dataclass(frozen=True)
class Case:
    """One number the API takes: where it goes, the values it must refuse, and the name its
    422 must give (the detail starts with it)."""

    name: str
    method: str
    path: str
    values: list[str]
    field: str
    body: Any = None  # a body with "@N@" where the number goes
    query: str = ""  # or the query parameter it is
    header: str = ""  # or the header it is

    def request(self, text: str, ids: Ids) -> dict[str, Any]:
        """httpx keywords sending `text` (JSON number text) in this case's place."""
        if self.query:
            return {"params": {self.query: text}}
        if self.header:
            return {"headers": {self.header: text}}
        raw = json.dumps(self.body).replace('"@N@"', text)
        for key, value in ids.items():
            raw = raw.replace(f"@{key}@", value)
        return {"content": raw, "headers": {"content-type": "application/json"}}


def task(**fields: Any) -> dict[str, Any]:
    return {"tasks": [{"argv": ["cat"], **fields}]}


def result(**fields: Any) -> dict[str, Any]:
    return {"lease_id": "@lease@", "exit_code": 0, **fields}


def manifest(**fields: Any) -> dict[str, Any]:
    return {"manifest": {"out.txt": {"sha256": SHA, "size": 7, **fields}}}


INPUT = {"sha256": SHA, "size": len(DATA)}
JOB_TASKS, WORKER = "/jobs/@job@/tasks", "/workers/@worker@"
CASES = [
    Case("max_attempts", "POST", "/jobs", [*NEGATIVE, "0", "1001"], "tasks[0].max_attempts",
         task(max_attempts="@N@")),
    Case("retries", "POST", "/jobs", [*NEGATIVE, "1001"], "tasks[0].retries",
         task(retries="@N@")),
    Case("limits", "POST", "/jobs", [*FLOATS, "1e16"], "tasks[0].limits[...]",
         task(limits={"memory": "@N@"})),
    Case("input size", "POST", "/jobs", NEGATIVE, "tasks[0].inputs[...].size",
         task(inputs={"in.txt": {"sha256": SHA, "size": "@N@"}})),
    Case("input mode", "POST", "/jobs", [*NEGATIVE, "4096"], "tasks[0].inputs[...].mode",
         task(inputs={"in.txt": {**INPUT, "mode": "@N@"}})),
    Case("after_index", "POST", "/jobs", NEGATIVE, "tasks[1].after_index[0]",
         {"tasks": [{"argv": ["true"]}, {"argv": ["true"], "after_index": ["@N@"]}]}),
    Case("cpus", "POST", "/jobs", ['"18446744073709551616"', '"10001"'], "tasks[0].requires.cpus",
         task(requires={"cpus": "@N@"})),
    Case("added max_attempts", "POST", JOB_TASKS, [*NEGATIVE, "0"], "tasks[0].max_attempts",
         task(max_attempts="@N@")),
    Case("added cpus", "POST", JOB_TASKS, ['"99999999999999999999"'], "tasks[0].requires.cpus",
         task(requires={"cpus": "@N@"})),
    Case("slots", "POST", "/workers", [*NEGATIVE, "0", "10001"], "slots",
         {"name": "w2", "slots": "@N@"}),
    Case("capabilities", "POST", "/workers", HUGE, "capabilities[...]",
         {"name": "w2", "slots": 1, "capabilities": {"cpus": "@N@"}}),
    Case("heartbeat capabilities", "POST", WORKER + "/heartbeat", HUGE, "capabilities[...]",
         {"capabilities": {"memory_total": "@N@"}}),
    Case("lease max", "POST", WORKER + "/lease", NEGATIVE, "max", {"max": "@N@"}),
    Case("lease wait", "POST", WORKER + "/lease", FLOATS, "wait", {"wait": "@N@"}),
    Case("prefetch", "POST", WORKER + "/lease", NEGATIVE, "prefetch",
         {"prefetch": "@N@", "prefetch_job": "@job@"}),
    Case("lease exit_code", "POST", WORKER + "/lease", [*HUGE, "2147483648", "-2147483649"],
         "results[...].exit_code", {"results": {"@task@": result(exit_code="@N@")}}),
    Case("lease manifest size", "POST", WORKER + "/lease", NEGATIVE,
         "results[...].manifest[...].size",
         {"results": {"@task@": result(**manifest(size="@N@"))}}),
    Case("heartbeat wait", "POST", WORKER + "/heartbeat", FLOATS, "wait", {"wait": "@N@"}),
    Case("log chunk offset", "POST", WORKER + "/heartbeat", NEGATIVE, "logs[0].offset",
         {"logs": [{"task_id": "@task@", "lease_id": "@lease@", "stream": "stdout",
                    "offset": "@N@", "data": ""}]}),
    Case("results exit_code", "POST", WORKER + "/results", [*HUGE, "2147483648"],
         "results[...].exit_code", {"results": {"@task@": result(exit_code="@N@")}}),
    Case("result exit_code", "POST", "/tasks/@task@/result", [*HUGE, "-2147483649"], "exit_code",
         result(exit_code="@N@")),
    Case("result manifest mode", "POST", "/tasks/@task@/result", [*NEGATIVE, "4096"],
         "manifest[...].mode", result(**manifest(mode="@N@"))),
    Case("token expires", "POST", "/tokens", [*FLOATS, "0"], "expires",
         {"name": "t", "role": "submit", "expires": "@N@"}),
    Case("token share", "POST", "/tokens", [*FLOATS, "0", "1000001"], "share",
         {"name": "t", "role": "submit", "share": "@N@"}),
    Case("token max_slots", "POST", "/tokens", [*NEGATIVE, "2147483648"], "max_slots",
         {"name": "t", "role": "submit", "max_slots": "@N@"}),
    Case("job priority", "POST", "/jobs", [*HUGE, "1000001", "-1000001"], "priority",
         {**task(), "priority": "@N@"}),
    Case("task priority", "POST", "/jobs", [*HUGE, "1000001"], "tasks[0].priority",
         task(priority="@N@")),
    Case("jobs limit", "GET", "/jobs", [*NEGATIVE, "0", "100001"], "limit", query="limit"),
    Case("tasks offset", "GET", JOB_TASKS, NEGATIVE, "offset", query="offset"),
    Case("tasks limit", "GET", JOB_TASKS, [*NEGATIVE, "0", "100001"], "limit", query="limit"),
    Case("events after", "GET", "/jobs/@job@/events", NEGATIVE, "after", query="after"),
    Case("Last-Event-ID", "GET", "/jobs/@job@/events", NEGATIVE, "Last-Event-ID",
         header="last-event-id"),
    Case("log offset", "GET", "/tasks/@task@/log", NEGATIVE, "offset", query="offset"),
    Case("audit after", "GET", "/audit", NEGATIVE, "after", query="after"),
    Case("audit limit", "GET", "/audit", [*NEGATIVE, "0", "100001"], "limit", query="limit"),
]  # fmt: skip


@pytest.fixture(params=BACKENDS)
def serve(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., None]]:
    """serve(body): run `body(api, ids)` against a coordinator over this backend, holding one
    job whose one task is leased and has written some output."""
    if request.param == "postgres":
        require_postgres()
    backend = Backend(request.param, tmp_path)

    def run(body: Callable[[Api, Ids], Any]) -> None:
        async def main(api: Api) -> None:
            await api.upload(DATA)
            job = await api.submit({"argv": ["cat"], "inputs": {"in.txt": INPUT}})
            worker = await api.register(slots=2)
            (a,) = await api.lease(worker)
            chunk = {"task_id": a["task_id"], "lease_id": a["lease_id"], "stream": "stdout"}
            logs = [{**chunk, "offset": 0, "data": "aGVsbG8="}]  # "hello"
            hb = await api.http.post(f"/workers/{worker}/heartbeat", json={"logs": logs})
            assert hb.status_code == 200, hb.text
            ids = {"job": job["id"], "task": a["task_id"], "lease": a["lease_id"], "worker": worker}
            await body(api, ids)

        run_api(tmp_path / "data", main, open_store=lambda _: backend.open())

    try:
        yield run
    finally:
        backend.close()


async def snapshot(api: Api, ids: Ids) -> dict[str, Any]:
    """What a refused request must leave as it was."""
    got = {}
    for path in ("/jobs", f"/jobs/{ids['job']}/tasks", "/workers", "/tokens", "/audit"):
        r = await api.http.get(path)
        assert r.status_code == 200, r.text
        got[path] = r.json()
    got["log"] = (await api.http.get(f"/tasks/{ids['task']}/log")).content
    return got


def _fill(path: str, ids: Ids) -> str:
    for key, value in ids.items():
        path = path.replace(f"@{key}@", value)
    return path


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_number_out_of_range_is_refused_naming_it(serve: Callable[..., None], case: Case) -> None:
    async def body(api: Api, ids: Ids) -> None:
        before = await snapshot(api, ids)
        for text in case.values:
            r = await api.http.request(
                case.method, _fill(case.path, ids), **case.request(text, ids)
            )
            assert r.status_code == 422, (text, r.text)
            error = r.json()
            assert error["error"] == "invalid_argument", (text, error)
            assert error["detail"].startswith(case.field + ":"), (text, error)
            assert "must be" in error["detail"], (text, error)
        assert await snapshot(api, ids) == before

    serve(body)


def test_the_detail_gives_the_whole_range(serve: Callable[..., None]) -> None:
    async def body(api: Api, ids: Ids) -> None:
        cases = {c.name: c for c in CASES}
        expected = {
            "max_attempts": "tasks[0].max_attempts: must be an integer from 1 to 1000",
            "slots": "slots: must be an integer from 1 to 10000",
            "log chunk offset": f"logs[0].offset: must be an integer from 0 to {INT64_MAX}",
            "lease wait": f"wait: must be a finite number from 0 to {MAX_SECONDS:.0f}",
            "token expires": f"expires: must be a finite number above 0, at most {MAX_SECONDS:.0f}",
            "result exit_code": (
                f"exit_code: must be an integer from {-INT32_MAX - 1} to {INT32_MAX}"
            ),
            "limits": f"tasks[0].limits[...]: must be a finite number from 0 to {MAX_LIMIT:.0f}",
            "tasks offset": f"offset: must be an integer from 0 to {INT64_MAX}",
            "audit limit": "limit: must be an integer from 1 to 100000",
        }
        for name, detail in expected.items():
            case = cases[name]
            kw = case.request(str(2**64), ids)
            r = await api.http.request(case.method, _fill(case.path, ids), **kw)
            assert r.json() == {"error": "invalid_argument", "detail": detail}

    serve(body)


def test_json_cannot_carry_nan_or_infinity(serve: Callable[..., None]) -> None:
    """Not JSON at all (400), or a string where a number goes (422 invalid_body)."""

    async def body(api: Api, ids: Ids) -> None:
        before = await snapshot(api, ids)
        for case in [c for c in CASES if "1e400" in c.values]:
            for text, status, code in [
                ("NaN", 400, "bad_request"),
                ("Infinity", 400, "bad_request"),
                ("-Infinity", 400, "bad_request"),
                ('"NaN"', 422, "invalid_body"),
                ('"inf"', 422, "invalid_body"),
            ]:
                r = await api.http.request(
                    case.method, _fill(case.path, ids), **case.request(text, ids)
                )
                assert (r.status_code, r.json()["error"]) == (status, code), (case.name, text)
        assert await snapshot(api, ids) == before

    serve(body)


def test_a_query_number_that_is_not_an_integer_is_a_bad_request(
    serve: Callable[..., None],
) -> None:
    async def body(api: Api, ids: Ids) -> None:
        for case in [c for c in CASES if c.query or c.header]:
            for text in ("x", "1.5", "1e3", "9" * 5000):  # 5000 digits: past int()'s limit
                r = await api.http.request(
                    case.method, _fill(case.path, ids), **case.request(text, ids)
                )
                assert (r.status_code, r.json()["error"]) == (400, "bad_request"), (case.name, text)
                assert r.json()["detail"] == f"{case.field}: must be an integer"

    serve(body)


def test_the_edges_are_accepted_and_stored(serve: Callable[..., None]) -> None:
    """The largest values of each range fit the columns they go to (PostgreSQL's INTEGER is
    32 bits), and the largest offsets read as nothing rather than failing."""

    async def body(api: Api, ids: Ids) -> None:
        # the scheduler compares capabilities as floats: the largest integers convert
        caps = {"slots": 10_000, "cpus": INT64_MAX, "memory_free": INT64_MAX}
        worker = {"name": "big", "slots": 10_000, "capabilities": caps}
        r = await api.http.post("/workers", json=worker)
        assert r.status_code == 200, r.text
        big = r.json()["id"]
        edge = {
            "argv": ["cat"],
            "max_attempts": 1000,
            "retries": 1000,
            "limits": {"memory": MAX_LIMIT, "wall_time": MAX_LIMIT},
            "requires": {"cpus": "10000", "min_cpus": "64", "min_memory": "1T"},
            "inputs": {"in.txt": {"sha256": SHA, "size": INT64_MAX, "mode": 0o7777}},
        }
        job = await api.submit(edge, {"argv": ["true"], "after_index": [0]})
        lease = {"max": INT32_MAX, "prefetch": INT32_MAX, "wait": 0}
        r = await api.http.post(f"/workers/{big}/lease", json=lease)
        assert r.status_code == 200, r.text
        (a,) = r.json()["assignments"]
        assert a["spec"]["inputs"]["in.txt"]["size"] == INT64_MAX
        # the first task's result: the largest exit code, stored and read back
        r = await api.result(a["task_id"], a["lease_id"], exit_code=INT32_MAX)
        assert r.status_code == 200, r.text
        assert (await api.task(a["task_id"]))["exit_code"] == INT32_MAX
        # and the smallest, through a batch of results
        r = await api.http.post(
            f"/workers/{ids['worker']}/results",
            json={
                "results": {ids["task"]: {"lease_id": ids["lease"], "exit_code": -INT32_MAX - 1}}
            },
        )
        assert r.status_code == 200, r.text
        assert (await api.task(ids["task"]))["exit_code"] == -INT32_MAX - 1
        for path, params in [
            (f"/jobs/{job['id']}/tasks", {"offset": INT64_MAX, "limit": 100_000}),
            ("/audit", {"after": INT64_MAX, "limit": 100_000}),
            ("/jobs", {"limit": 100_000}),
        ]:
            r = await api.http.get(path, params=params)
            assert r.status_code == 200, r.text
            assert r.json() == [] or path == "/jobs"
        r = await api.http.get(f"/tasks/{ids['task']}/log", params={"offset": INT64_MAX})
        assert (r.status_code, r.content) == (200, b"")
        r = await api.http.get(f"/jobs/{ids['job']}/events", params={"after": INT64_MAX})
        assert r.status_code == 200 and r.text.startswith("event: end"), r.text
        token = {"name": "long", "role": "submit", "expires": MAX_SECONDS}
        assert (await api.http.post("/tokens", json=token)).status_code == 201

    serve(body)


def test_every_number_a_request_takes_has_a_range() -> None:
    """A new int or float field on a request must say its range (protocol/_bounds.py), or a
    value past 64 bits would reach the store again."""
    import msgspec

    from corral.coordinator.routes import ENDPOINTS

    unbounded: list[str] = []

    def walk(node: Any, where: str, seen: set[type]) -> None:
        info = msgspec.inspect
        if isinstance(node, info.IntType | info.FloatType):
            if node.le is None or (node.ge is None and node.gt is None):
                unbounded.append(where)
        elif isinstance(node, info.StructType):
            if node.cls in seen:
                return
            for f in node.fields:
                walk(f.type, f"{node.cls.__name__}.{f.name}", seen | {node.cls})
        elif isinstance(node, info.ListType | info.SetType | info.FrozenSetType):
            walk(node.item_type, where + "[]", seen)
        elif isinstance(node, info.DictType):
            walk(node.value_type, where + "[...]", seen)
        elif isinstance(node, info.UnionType):
            for t in node.types:
                walk(t, where, seen)

    for e in ENDPOINTS:
        if e.body is not None:
            walk(msgspec.inspect.type_info(e.body), e.body.__name__, set())
    assert unbounded == []
