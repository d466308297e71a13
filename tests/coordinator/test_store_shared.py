"""What coordinators on one database share, on both backends: the schema version, shared
secrets, blobs kept in the database, and blob reads that never hand out a wrong file."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_store_contract import Backend

from corral.coordinator.blobs import BlobUnavailable, DatabaseBlobs
from corral.coordinator.store import SchemaTooNew, Store
from corral.coordinator.store._schema import SCHEMA_VERSION


def test_schema_version_is_recorded_and_a_newer_one_refused(store: Store, backend: Backend) -> None:
    db = store._db  # type: ignore[attr-defined]
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    backend.track(backend.open())  # the same version opens again
    db.execute("UPDATE schema_version SET version = version + 1")
    with pytest.raises(SchemaTooNew, match="newer than this coordinator"):
        backend.open()


def test_a_shared_value_is_made_once(store: Store, backend: Backend) -> None:
    other = backend.track(backend.open())
    assert store.shared_value("k", lambda: b"first") == b"first"
    assert other.shared_value("k", lambda: b"second") == b"first"


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data[:3]
    yield data[3:]


def test_database_blobs_reach_another_coordinator(
    store: Store, backend: Backend, tmp_path: Path
) -> None:
    data = b"hello, farm" * 100_000  # more than one chunk
    sha = hashlib.sha256(data).hexdigest()
    here = DatabaseBlobs(tmp_path / "a", store)
    there = DatabaseBlobs(tmp_path / "b", backend.track(backend.open()))
    assert there.missing([sha]) == [sha]
    assert asyncio.run(here.put(sha, _body(data), 1 << 30)) == len(data)
    assert there.has(sha) and there.missing([sha]) == []
    assert there.path(sha).read_bytes() == data
    assert there.put_bytes(b"x") == hashlib.sha256(b"x").hexdigest()
    assert here.path(hashlib.sha256(b"x").hexdigest()).read_bytes() == b"x"


def test_a_corrupt_database_blob_is_unavailable_not_wrong(
    store: Store, backend: Backend, tmp_path: Path
) -> None:
    sha = DatabaseBlobs(tmp_path / "a", store).put_bytes(b"good")
    store._db.execute(  # type: ignore[attr-defined]
        store._q("UPDATE blob_chunks SET data = ? WHERE sha256 = ?"),  # type: ignore[attr-defined]
        (b"evil", sha),
    )
    other = DatabaseBlobs(tmp_path / "b", store)
    with pytest.raises(BlobUnavailable, match="corrupt"):
        other.path(sha)
    assert not other.root.joinpath(sha[:2], sha).exists()
