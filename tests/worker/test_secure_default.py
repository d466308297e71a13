"""A worker joining over the network will not run tasks unsandboxed unless told to."""

from __future__ import annotations

from corral.worker.config import sandbox_refusal

REMOTE = "https://farm.example.org:8470"


def test_off_loopback_without_a_sandbox_is_refused() -> None:
    refused = sandbox_refusal(REMOTE, True, None, installed=False)
    assert refused is not None and "\n" not in refused
    assert "bwrap is not installed" in refused and "--no-sandbox" in refused
    broken = sandbox_refusal(REMOTE, True, None, installed=True)
    assert broken is not None and "cannot create namespaces" in broken


def test_a_sandbox_loopback_or_no_sandbox_on_purpose_may_start() -> None:
    assert sandbox_refusal(REMOTE, True, "/usr/bin/bwrap", installed=True) is None
    assert sandbox_refusal(REMOTE, False, None, installed=False) is None  # --no-sandbox
    for local in ("http://127.0.0.1:8470", "http://localhost:1", "http://[::1]:2"):
        assert sandbox_refusal(local, True, None, installed=False) is None
