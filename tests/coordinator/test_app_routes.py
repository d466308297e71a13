"""The app's route table: the hot endpoints come first, and moving them changed no answer
(each method and path is matched by exactly one route, wherever it sits)."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.routing import Match

from corral.coordinator import Settings, build_app
from corral.coordinator.app import HOT, PREFIX, by_traffic
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.routes import ENDPOINTS
from corral.coordinator.store import SQLiteStore


def _scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def test_each_endpoint_is_matched_by_its_route_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db")
    try:
        app = build_app(Settings(data_dir=tmp_path), store, LocalBlobs(tmp_path / "blobs"))
        for e in ENDPOINTS:
            path = PREFIX + re.sub(r"\{[^}]+\}", "x1", e.path)
            full = [r for r in app.routes if r.matches(_scope(e.method, path))[0] == Match.FULL]
            assert [getattr(r, "name", None) for r in full] == [e.handler.__name__], path
    finally:
        store.close()


def test_hot_endpoints_come_first_in_their_order() -> None:
    ordered = [e.handler.__name__ for e in by_traffic(ENDPOINTS)]
    assert ordered[: len(HOT)] == list(HOT)
    assert sorted(ordered) == sorted(e.handler.__name__ for e in ENDPOINTS)
