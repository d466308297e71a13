"""Futures as arguments, the caller's half, without a farm (client/_deps.py)."""

from __future__ import annotations

from corral.client import TaskFuture
from corral.client._deps import DependencyResult, lift_futures, with_after_files
from corral.protocol import AfterFile, TaskSpec


def test_lift_futures_replaces_task_futures_and_records_them() -> None:
    f, g = TaskFuture(), TaskFuture()
    after: list[object] = ["earlier"]
    args, kwargs, files = lift_futures((1, f), {"k": g, "plain": 2}, after)
    assert args == (1, DependencyResult("corral-dep-1.pkl"))
    assert kwargs == {"k": DependencyResult("corral-dep-2.pkl"), "plain": 2}
    assert after == ["earlier", f, g]
    assert files == {"corral-dep-1.pkl": 1, "corral-dep-2.pkl": 2}


def test_with_after_files_names_the_dependencies_results() -> None:
    spec = TaskSpec(argv=["x"])
    assert with_after_files(spec, ["a"], {}, "r.pkl") is spec
    out = with_after_files(spec, ["a", "b"], {"corral-dep-1.pkl": 1}, "r.pkl")
    assert out.after_inputs == {"corral-dep-1.pkl": AfterFile("b", "r.pkl")}
