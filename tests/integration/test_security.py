"""Identities, roles, revocation, the audit log and TLS joining, over real processes.

Each role is exercised against a real `corral server` over loopback HTTP: what it may do
succeeds, anything else is 401 (no or bad token) or 403 (a real token, not allowed).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.client import make_join, parse_join, pem_fingerprint

from .conftest import PYTHON, Farm, free_port, run_cli, wait_for

API = "/api/v1"


OPEN: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


class As:
    """Raw HTTP calls to a farm with one token."""

    def __init__(self, farm: Farm, secret: str | None) -> None:
        headers = {"authorization": f"Bearer {secret}"} if secret else {}
        self.http = httpx.Client(base_url=farm.url + API, headers=headers, timeout=10.0)
        OPEN.append(self.http)

    def __call__(self, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        if body is not None:
            kw["json"] = body
        return self.http.request(method, path, **kw)

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        r = self(method, path, body, **kw)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def refused(self, status: int, method: str, path: str, body: Any = None) -> None:
        r = self(method, path, body)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        assert r.json()["error"] == {401: "unauthorized", 403: "forbidden"}[status]


def make_token(farm: Farm, role: str, name: str, *extra: str) -> tuple[str, str]:
    """(token id, secret) of a new token, made through the CLI."""
    rc, out, err = farm.cli("token", "create", "--role", role, "--name", name, "--json", *extra)
    assert rc == 0, err
    made = json.loads(out)
    return made["token"]["id"], made["secret"]


def upload(who: As, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    assert who("PUT", f"/blobs/{sha}", content=data).status_code in (200, 201)
    return sha


def echo_job(who: As, sha: str) -> dict[str, Any]:
    task = {"argv": ["cat", "in.txt"], "inputs": {"in.txt": {"sha256": sha, "size": 1}}}
    return dict(who.ok("POST", "/jobs", {"tasks": [task]}))


def test_each_role_is_allowed_its_own_and_refused_the_rest(farm: Callable[..., Farm]) -> None:
    f = farm()
    admin = As(f, f.token)
    alice, bob = (
        As(f, make_token(f, "submit", "alice")[1]),
        As(f, make_token(f, "submit", "bob")[1]),
    )
    box, box2 = As(f, make_token(f, "worker", "box")[1]), As(f, make_token(f, "worker", "box2")[1])

    job_a = echo_job(alice, upload(alice, b"a"))
    bob_blob = upload(bob, b"b")
    job_b = echo_job(bob, bob_blob)
    task_b = bob.ok("GET", f"/jobs/{job_b['id']}/tasks")[0]["id"]
    assert job_a["owner"] == "alice" and job_b["owner"] == "bob"

    # submit: its own jobs only
    assert [j["id"] for j in alice.ok("GET", "/jobs")] == [job_a["id"]]
    assert {j["id"] for j in admin.ok("GET", "/jobs")} == {job_a["id"], job_b["id"]}
    alice.ok("GET", f"/jobs/{job_a['id']}")
    for method, path in [
        ("GET", f"/jobs/{job_b['id']}"),
        ("GET", f"/jobs/{job_b['id']}/tasks"),
        ("GET", f"/jobs/{job_b['id']}/events"),
        ("POST", f"/jobs/{job_b['id']}/kill"),
        ("GET", f"/tasks/{task_b}"),
        ("GET", f"/tasks/{task_b}/log"),
        ("POST", f"/tasks/{task_b}/kill"),
        ("GET", f"/blobs/{bob_blob}"),
        ("GET", "/tokens"),
        ("GET", "/audit"),
    ]:
        alice.refused(403, method, path)
    alice.refused(403, "POST", "/workers", {"name": "x", "slots": 1})
    alice.refused(403, "POST", f"/jobs/{job_b['id']}/tasks", {"tasks": [{"argv": ["true"]}]})
    # a submitter cannot borrow someone else's blob by naming its hash
    r = alice(
        "POST",
        "/jobs",
        {"tasks": [{"argv": ["x"], "inputs": {"x": {"sha256": bob_blob, "size": 1}}}]},
    )
    assert r.status_code == 422
    assert alice.ok("POST", "/blobs/missing", {"sha256": [bob_blob]})["missing"] == [bob_blob]
    upload(alice, b"b")  # proving it has the content makes it readable
    assert alice("GET", f"/blobs/{bob_blob}").content == b"b"

    # worker: the worker endpoints, for its own workers and leases only
    box.refused(403, "GET", "/jobs")
    box.refused(403, "POST", "/jobs", {"tasks": [{"argv": ["true"]}]})
    box.refused(403, "GET", f"/jobs/{job_a['id']}")
    box.refused(403, "GET", "/tokens")
    w1 = box.ok("POST", "/workers", {"name": "w1", "slots": 1})["id"]
    w2 = box2.ok("POST", "/workers", {"name": "w2", "slots": 1})["id"]
    box2.refused(403, "POST", f"/workers/{w1}/lease", {"max": 1})
    box2.refused(403, "POST", f"/workers/{w1}/heartbeat", {"leases": []})
    box2.refused(403, "POST", f"/workers/{w1}/deregister")
    (assignment,) = box.ok("POST", f"/workers/{w1}/lease", {"max": 1})["assignments"]
    assert assignment["job_id"] == job_a["id"] and assignment["token"]
    box.ok("POST", f"/workers/{w1}/heartbeat", {"leases": [assignment["lease_id"]]})
    assert box("GET", f"/blobs/{bob_blob}").content == b"b"  # workers fetch any input
    result = {"lease_id": assignment["lease_id"], "exit_code": 0}
    box2.refused(403, "POST", f"/tasks/{assignment['task_id']}/result", result)

    # job: the token handed to the task reads and extends its own job only
    job_tok = As(f, assignment["token"])
    job_tok.ok("GET", f"/jobs/{job_a['id']}")
    job_tok.ok("GET", f"/tasks/{assignment['task_id']}")
    child = job_tok.ok("POST", f"/jobs/{job_a['id']}/tasks", {"tasks": [{"argv": ["true"]}]})
    assert len(child) == 1 and child[0]["job_id"] == job_a["id"]
    assert alice.ok("GET", f"/jobs/{job_a['id']}")["total"] == 2
    job_tok.refused(403, "GET", f"/jobs/{job_b['id']}")
    job_tok.refused(403, "GET", "/jobs")
    job_tok.refused(403, "POST", "/jobs", {"tasks": [{"argv": ["true"]}]})
    job_tok.refused(403, "POST", f"/workers/{w2}/lease", {"max": 1})

    box.ok("POST", f"/tasks/{assignment['task_id']}/result", result)
    admin.ok("POST", f"/jobs/{job_a['id']}/kill")  # the job is over: its job token is too
    job_tok.refused(401, "GET", f"/jobs/{job_a['id']}")

    # nobody
    for secret in (None, "crl_wrong", assignment["token"] + "x", "crj_a.b.c"):
        As(f, secret).refused(401, "GET", f"/jobs/{job_a['id']}")


def test_revoked_token_stops_at_once_and_the_audit_log_says_who(
    farm: Callable[..., Farm],
) -> None:
    f = farm()
    token_id, secret = make_token(f, "submit", "carol", "--expires", "1h")
    carol = As(f, secret)
    job = echo_job(carol, upload(carol, b"c"))
    rc, _, err = f.cli("kill", job["id"])
    assert rc == 0, err
    rc, out, err = f.cli("token", "revoke", token_id)
    assert rc == 0 and token_id in out, err
    carol.refused(401, "GET", "/jobs")  # the very next request
    assert "revoked" in carol("GET", "/jobs").json()["detail"]

    rc, out, err = f.cli("token", "list", "--json")
    listed = {t["id"]: t for t in json.loads(out)}
    assert listed[token_id]["revoked"] is not None and listed[token_id]["expires"] is not None
    assert "secret" not in out and secret not in out

    rc, out, err = f.cli("audit", "--json")
    assert rc == 0, err
    seen = [(e["actor"], e["action"], e["target"]) for e in json.loads(out)]
    assert ("admin", "token.create", token_id) in seen
    assert ("carol", "job.submit", job["id"]) in seen
    assert ("admin", "job.kill", job["id"]) in seen
    assert ("admin", "token.revoke", token_id) in seen

    # the audit log is for admins only, and bad input makes no token
    rc, _, err = run_cli(["audit"], {**f.env, "CORRAL_URL": f.url, "CORRAL_TOKEN": secret}, f.root)
    assert rc != 0 and len(err.strip().splitlines()) == 1
    rc, _, err = f.cli("token", "create", "--role", "submit", "--name", "x", "--expires", "soon")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    rc, out, _ = f.cli("token", "list", "--json")
    assert "x" not in [t["name"] for t in json.loads(out)]


def _tls_server(root: Path, env: dict[str, str], procs: list[Any]) -> tuple[str, str, Path]:
    """Start `corral server --tls auto`; return (url, admin token, CA file)."""
    port, data = free_port(), root / "data"
    root.mkdir(parents=True, exist_ok=True)
    argv = [PYTHON, "-m", "corral", "server", "--port", str(port), "--data", str(data)]
    with (root / "server.log").open("wb") as log:
        procs.append(subprocess.Popen(argv + ["--tls", "auto"], env=env, stdout=log, stderr=log))
    url, ca = f"https://127.0.0.1:{port}", data / "tls" / "ca.pem"

    def up() -> bool:
        try:
            ctx = ssl.create_default_context(cafile=ca)
            return httpx.get(url + "/healthz", verify=ctx, timeout=1).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    wait_for(up, 20, what="the TLS coordinator")
    return url, (data / "admin.token").read_text().strip(), ca


def test_join_pins_the_ca_and_refuses_another(
    tmp_path: Path, isolated: dict[str, str], procs: list[subprocess.Popen[bytes]]
) -> None:
    url_a, admin_a, ca_a = _tls_server(tmp_path / "a", isolated, procs)
    url_b, _, ca_b = _tls_server(tmp_path / "b", isolated, procs)
    assert pem_fingerprint(ca_a.read_bytes()) != pem_fingerprint(ca_b.read_bytes())
    env = {**isolated, "CORRAL_URL": url_a, "CORRAL_TOKEN": admin_a, "CORRAL_CA": str(ca_a)}

    # without the CA the client refuses the server's certificate
    rc, _, err = run_cli(["ps"], {**env, "CORRAL_CA": ""}, tmp_path)
    assert rc == 1 and "certificate" in err.lower()

    rc, join, err = run_cli(
        ["token", "create", "--role", "worker", "--name", "pc1", "--join"], env, tmp_path
    )
    assert rc == 0, err
    parsed = parse_join(join)
    assert parsed.url == url_a and parsed.ca_sha256 == pem_fingerprint(ca_a.read_bytes())

    bare = {k: v for k, v in isolated.items() if not k.startswith("CORRAL_")}
    argv = [PYTHON, "-m", "corral", "worker", "--join", join.strip(), "--name", "pc1"]
    argv += ["--work-dir", str(tmp_path / "pc1")]
    with (tmp_path / "pc1.log").open("wb") as log:
        procs.append(subprocess.Popen(argv, env=bare, stdout=log, stderr=log))
    rc, out, err = run_cli(["submit", "--", "sh", "-c", "echo joined"], env, tmp_path)
    assert rc == 0, err
    rc, out, err = run_cli(["wait", out.strip()], env, tmp_path, timeout=60)
    assert rc == 0, (out, err, (tmp_path / "pc1.log").read_text())

    # the same join string pointed at a coordinator with another CA: refused, one line
    wrong = make_join(url_b, parsed.ca_sha256, parsed.token)
    argv = [PYTHON, "-m", "corral", "worker", "--join", wrong, "--work-dir", str(tmp_path / "x")]
    done = subprocess.run(argv, env=bare, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "pinned" in done.stderr
    assert not (tmp_path / "x" / "ca.pem").exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_non_loopback_bind_without_tls_is_refused(
    tmp_path: Path, isolated: dict[str, str], host: str
) -> None:
    args = ["server", "--host", host, "--port", str(free_port()), "--data", str(tmp_path / "d")]
    rc, out, err = run_cli(args, isolated, tmp_path, timeout=30)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "without TLS" in err
    assert not (tmp_path / "d").exists()  # nothing half-created
