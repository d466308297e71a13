"""How a worker's HTTP client verifies its coordinator."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from corral.coordinator.tls import auto_tls
from corral.worker.config import tls_verify


@pytest.mark.parametrize("url", ["http://127.0.0.1:8470", "HTTP://farm.example:80"])
def test_plain_http_loads_no_ca_bundle_and_trusts_nothing(url: str) -> None:
    context = tls_verify(url, None)
    assert isinstance(context, ssl.SSLContext)
    assert context.cert_store_stats()["x509_ca"] == 0  # TLS anywhere would fail, not pass
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_https_uses_the_system_trust() -> None:
    assert tls_verify("https://farm.example", None) is True


def test_a_pinned_ca_is_the_only_trust_root(tmp_path: Path) -> None:
    ca = auto_tls(tmp_path, ["127.0.0.1"]).ca
    context = tls_verify("https://127.0.0.1:8470", ca)
    assert isinstance(context, ssl.SSLContext)
    assert context.cert_store_stats()["x509_ca"] == 1
    assert context.verify_mode == ssl.CERT_REQUIRED
