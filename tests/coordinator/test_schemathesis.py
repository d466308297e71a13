"""Property-based API testing: schemathesis generates requests from /api/v1/openapi.json and
sends them, authenticated, to a real `corral server` on loopback. No answer may be a 5xx, and
every answer must match the document (status codes, content types, response schemas).

The document gives every number its range (minimum/maximum), so the positive run tries the
edges, and the negative run sends requests that break the document (numbers past their ranges,
wrong types): still never a 5xx. Not every broken request is refused, on purpose: an unknown
query parameter is ignored, so schemathesis's negative_data_rejection check is not used.

The seed is fixed and the number of examples bounded, so the run is repeatable and short.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

EXAMPLES = int(os.environ.get("CORRAL_SCHEMATHESIS_EXAMPLES", "15"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real coordinator process: (base URL, admin token); stopped at the end."""
    root: Path = tmp_path_factory.mktemp("schemathesis")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["XDG_CONFIG_HOME"] = str(root / "config")
    port = _free_port()
    argv = [sys.executable, "-m", "corral", "server", "--port", str(port)]
    argv += ["--data", str(root / "data"), "--lease-timeout", "2"]
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (root / "server.log").read_text()
            assert time.monotonic() < deadline, "the coordinator did not start"
            time.sleep(0.05)
        yield url, (root / "data" / "admin.token").read_text().strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_api_conforms_to_its_openapi_document(coordinator: tuple[str, str]) -> None:
    url, token = coordinator
    auth = {"authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(url + "/api/v1/openapi.json", headers=auth)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    seen: collections.Counter[int] = collections.Counter()

    for operation in operations:

        @seed(20261122)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            response = case.call_and_validate(base_url=url, headers=auth, checks=CHECKS, timeout=20)
            seen[response.status_code // 100] += 1

        run()
    # the run reached the handlers, not only the router and the body decoder
    assert seen[2] >= 5 * 3 and seen[4] > 0 and set(seen) <= {2, 4}, seen


def test_requests_outside_the_document_are_refused(coordinator: tuple[str, str]) -> None:
    url, token = coordinator
    auth = {"authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(url + "/api/v1/openapi.json", headers=auth)
    # only operations that take something a request can get wrong: a body or a query number
    operations = [
        op for result in schema.get_all_operations() if (op := result.ok()).body or op.query
    ]
    assert len(operations) >= 15
    seen: collections.Counter[int] = collections.Counter()

    for operation in operations:

        @seed(20261123)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        def run(case: schemathesis.Case) -> None:
            checks = [not_a_server_error, status_code_conformance]
            response = case.call_and_validate(base_url=url, headers=auth, checks=checks, timeout=20)
            seen[response.status_code // 100] += 1

        run()
    assert seen[4] > seen[2] and set(seen) <= {2, 4}, seen
