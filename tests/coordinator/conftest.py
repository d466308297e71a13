"""Fixtures of the store contract suites: every test taking `store` runs on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store_contract import BACKENDS, Backend, require_postgres

from corral.coordinator.store import Store


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh database of each kind (PostgreSQL skipped where it is missing, but not in CI)."""
    if request.param == "postgres":
        require_postgres()
    opened = Backend(request.param, tmp_path)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    """A fresh, empty store on `backend`; more may be opened on the same database."""
    return backend.open()
