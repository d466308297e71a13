"""Futures as arguments, the caller's half, without a farm (client/_deps.py)."""

from __future__ import annotations

import pytest

from corral.client import TaskFuture
from corral.client._deps import DependencyResult, lift_futures, stage_files, with_after_files
from corral.protocol import AfterFile, TaskSpec


def test_lift_futures_replaces_task_futures_and_records_them() -> None:
    f, g = TaskFuture(), TaskFuture()
    after: list[object] = ["earlier"]
    args, kwargs, files = lift_futures((1, f), {"k": g, "plain": 2}, after, "r.pkl")
    assert args == (1, DependencyResult("corral-dep-1.pkl"))
    assert kwargs == {"k": DependencyResult("corral-dep-2.pkl"), "plain": 2}
    assert after == ["earlier", f, g]
    assert files == {"corral-dep-1.pkl": (1, "r.pkl"), "corral-dep-2.pkl": (2, "r.pkl")}


def test_with_after_files_names_the_dependencies_results() -> None:
    spec = TaskSpec(argv=["x"])
    assert with_after_files(spec, ["a"], {}) is spec
    files = {"corral-dep-1.pkl": (1, "r.pkl"), "run-3": (0, "out/run-3")}
    out = with_after_files(spec, ["a", "b"], files)
    assert out.after_inputs == {
        "corral-dep-1.pkl": AfterFile("b", "r.pkl"),
        "run-3": AfterFile("a", "out/run-3"),
    }


def test_stage_files_reuses_a_dependency_already_named_and_appends_new_ones() -> None:
    f, g = TaskFuture(), TaskFuture()
    after: list[object] = [f]
    files = stage_files({"a": (f, "x"), "b": (g, "y"), "c": ("t1", "z")}, after)
    assert after == [f, g, "t1"]
    assert files == {"a": (0, "x"), "b": (1, "y"), "c": (2, "z")}
    with pytest.raises(TypeError, match="neither a task future nor an id"):
        stage_files({"d": (3, "x")}, [])
