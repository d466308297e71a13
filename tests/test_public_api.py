"""Each package's `__all__`: sorted, without duplicates, and every name in it really there.

"Sorted" is isort's order for `__all__` (ruff's RUF022): SCREAMING_CASE constants first, then
CamelCase classes, then everything else, each group alphabetical.
"""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "corral",
    "corral.protocol",
    "corral.client",
    "corral.coordinator",
    "corral.coordinator.store",
    "corral.coordinator.providers",
    "corral.cli",
    "corral.jobfile",
    "corral.mapreduce",
]


def isort_key(name: str) -> tuple[int, str]:
    if len(name) > 1 and name.isupper():
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted_and_unique(package: str) -> None:
    names = list(importlib.import_module(package).__all__)
    assert names, f"{package}.__all__ is empty"
    assert len(names) == len(set(names)), f"{package}.__all__ has duplicates"
    assert names == sorted(names, key=isort_key), f"{package}.__all__ is not sorted"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_exists(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == [], f"{package}.__all__ names what it lacks: {missing}"
    assert all(isinstance(name, str) for name in module.__all__)
    private = [n for n in module.__all__ if n.startswith("_") and n != "__version__"]
    assert private == []


@pytest.mark.parametrize("package", PACKAGES)
def test_star_import_gives_exactly_all(package: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(importlib.import_module(package).__all__)


def test_the_version_is_the_distributions() -> None:
    from importlib.metadata import version

    import corral

    assert corral.__version__ == version("corral")
