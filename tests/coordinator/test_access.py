"""The pure parts of security: role rules, token checks, job tokens, join strings, binding."""

from __future__ import annotations

import pytest

from corral._net import is_loopback
from corral.cli._common import Fail
from corral.cli._security import parse_duration
from corral.client import ConfigError, make_join, parse_join
from corral.coordinator.access import (
    JobTokens,
    Principal,
    hash_secret,
    may_call,
    may_use_job,
    new_secret,
    token_problem,
)
from corral.coordinator.routes import ENDPOINTS
from corral.coordinator.store import TokenRecord
from corral.coordinator.tls import bind_refusal

ALL_OPS = {e.handler.__name__ for e in ENDPOINTS}
ADMIN = Principal("t0", "root", "admin", "root")
ALICE = Principal("t1", "alice", "submit", "alice")
BOX = Principal("t2", "box", "worker", "box")
JOB = Principal("job:j1", "job j1", "job", "alice", "j1")


ADMIN_ONLY = {"create_token", "list_tokens", "revoke_token", "audit_log"}
WORKER_ONLY = {
    "register_worker",
    "heartbeat",
    "lease",
    "deregister",
    "task_result",
    "worker_results",
}
BLOBS = {"missing_blobs", "put_blob", "get_blob"}
JOB_READS = {"get_job", "list_tasks", "job_events", "get_task", "task_log", "add_tasks"}
OWN_JOBS = JOB_READS | {"create_job", "list_jobs", "kill_job", "kill_task", "find_ids"}


@pytest.mark.parametrize(
    ("who", "allowed", "denied"),
    [
        (ADMIN, ALL_OPS, set()),
        (ALICE, OWN_JOBS | BLOBS | {"list_workers"}, ADMIN_ONLY | WORKER_ONLY),
        (BOX, WORKER_ONLY | BLOBS, ADMIN_ONLY | OWN_JOBS | {"list_workers"}),
        (JOB, JOB_READS | BLOBS, ADMIN_ONLY | WORKER_ONLY | (OWN_JOBS - JOB_READS)),
    ],
    ids=["admin", "submit", "worker", "job"],
)
def test_may_call(who: Principal, allowed: set[str], denied: set[str]) -> None:
    assert {op for op in allowed if not may_call(who, op)} == set()
    assert {op for op in denied if may_call(who, op)} == set()
    assert not may_call(Principal("t", "x", "nobody", "x"), "get_job")


def test_may_use_job() -> None:
    assert may_use_job(ADMIN, "j2", "bob")
    assert may_use_job(ALICE, "j2", "alice") and not may_use_job(ALICE, "j2", "bob")
    assert may_use_job(JOB, "j1", "alice") and not may_use_job(JOB, "j2", "alice")
    assert not may_use_job(BOX, "j1", "box")  # workers see tasks through leases, not jobs


def test_token_problem() -> None:
    token = TokenRecord("t", "n", "submit", "n", "h", created=0.0, expires=10.0)
    assert token_problem(token, 5.0) is None
    assert token_problem(token, 10.0) == "the token has expired"
    revoked = TokenRecord("t", "n", "submit", "n", "h", created=0.0, revoked=1.0)
    assert token_problem(revoked, 0.5) == "the token was revoked"


def test_secrets_are_long_random_and_hashed() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and len(a) > 40
    assert hash_secret(a) != a and len(hash_secret(a)) == 64


def test_job_tokens_cannot_be_forged_or_moved() -> None:
    tokens = JobTokens(b"k" * 32)
    good = tokens.mint("t1", "l1")
    assert tokens.lease_of(good) == ("t1", "l1")
    assert JobTokens(b"x" * 32).lease_of(good) is None  # another coordinator's key
    assert tokens.lease_of(good.replace("crj_t1", "crj_t2")) is None  # another task
    assert tokens.lease_of(good.replace(".l1.", ".l2.")) is None  # another lease
    for bad in ("crj_", "crj_t1.l1", "crl_abc", good + "0", "crj_t1.l1.00"):
        assert tokens.lease_of(bad) is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True)]
    + [("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.org", False)],
)
def test_bind_refusal(host: str, loopback: bool) -> None:
    assert is_loopback(host) == loopback
    refused = bind_refusal(host, tls=False, insecure=False)
    assert (refused is None) == loopback
    assert bind_refusal(host, tls=True, insecure=False) is None
    assert bind_refusal(host, tls=False, insecure=True) is None


def test_join_strings_round_trip_and_refuse_damage() -> None:
    text = make_join("https://farm.example:8470", "ab" * 32, "crl_secret")
    assert text.startswith("corral1:") and "\n" not in text
    join = parse_join(text)
    assert (join.url, join.ca_sha256, join.token) == (
        "https://farm.example:8470",
        "ab" * 32,
        "crl_secret",
    )
    for bad in ("", "corral2:xyz", "corral1:!!!", "corral1:e30", text[:-5]):
        with pytest.raises(ConfigError):
            parse_join(bad)
    with pytest.raises(ConfigError, match="https"):
        parse_join(make_join("http://farm:8470", "ab" * 32, "s"))


def test_parse_duration() -> None:
    assert parse_duration("90s") == 90 and parse_duration("1h") == 3600
    assert parse_duration("7d") == 7 * 86400 and parse_duration("1.5m") == 90
    for bad in ("", "0h", "1y", "-1h", "h", "1 hour"):
        with pytest.raises(Fail):
            parse_duration(bad)
