"""The import rules, read from the source with `ast` (no module is imported):

    protocol      imports nothing else from corral
    coordinator   never imports worker, and worker never imports coordinator
    cli           is imported by nothing (but `python -m corral`, its entry point)
    jobfile       imports only protocol (the CLI and the coordinator's dashboard share it)
    mapreduce     is built on the public client API only: it imports corral.client and
                  itself, nothing else from corral
    client._*     private modules, imported only from inside client/

Every import statement counts, also those inside functions or under TYPE_CHECKING, and
`from corral.client import _join` counts as importing the private module `client._join`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import corral

SRC = Path(corral.__file__).parent
ENTRY_POINTS = {"corral.__main__"}  # runs the CLI, as the `corral` script does


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) for each module or name the file imports."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:  # `from pkg import mod` imports pkg.mod
                if _is_module(f"{base}.{alias.name}"):
                    yield node.lineno, f"{base}.{alias.name}"


def _is_module(name: str) -> bool:
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _all_imports() -> list[tuple[str, int, str]]:
    return [
        (_module_name(path), line, target)
        for path in sorted(SRC.rglob("*.py"))
        for line, target in _imports(path)
        if target == "corral" or target.startswith("corral.")
    ]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _protocol(importer: str, target: str) -> bool:
    return _within(importer, "corral.protocol") and not _within(target, "corral.protocol")


def _server_sides(importer: str, target: str) -> bool:
    sides = ("corral.coordinator", "corral.worker")
    return any(_within(importer, a) and _within(target, b) for a in sides for b in sides if a != b)


def _cli(importer: str, target: str) -> bool:
    inside = _within(importer, "corral.cli") or importer in ENTRY_POINTS
    return _within(target, "corral.cli") and not inside


def _client_private(importer: str, target: str) -> bool:
    if _within(importer, "corral.client") or not _within(target, "corral.client"):
        return False
    rest = target.removeprefix("corral.client").lstrip(".")
    return rest.startswith("_")


def _jobfile(importer: str, target: str) -> bool:
    if not _within(importer, "corral.jobfile") or _within(target, "corral.jobfile"):
        return False
    return not _within(target, "corral.protocol")


def _mapreduce(importer: str, target: str) -> bool:
    if not _within(importer, "corral.mapreduce") or _within(target, "corral.mapreduce"):
        return False
    return target != "corral.client"


RULES: dict[str, Callable[[str, str], bool]] = {
    "protocol imports nothing else from corral": _protocol,
    "coordinator and worker never import each other": _server_sides,
    "nothing imports cli": _cli,
    "nothing outside client/ imports client._*": _client_private,
    "mapreduce uses only the public client API": _mapreduce,
    "jobfile imports only protocol": _jobfile,
}


@pytest.mark.parametrize("rule", RULES)
def test_import_rule(rule: str) -> None:
    broken = RULES[rule]
    found = {f"{m}:{line} imports {t}" for m, line, t in _all_imports() if broken(m, t)}
    assert not found, "\n".join(sorted(found))


def test_the_rules_see_imports() -> None:
    """Guard against a test that passes because it reads nothing."""
    seen = {(m, t) for m, _, t in _all_imports()}
    assert ("corral.coordinator.app", "corral.coordinator.routes") in seen  # relative, level 1
    assert ("corral.coordinator.routes.jobs", "corral.protocol") in seen  # level 3
    assert ("corral.__main__", "corral.cli") in seen
    assert ("corral.coordinator.routes.jobs", "corral.coordinator.guards") in seen  # from ..
    assert _client_private("corral.cli._x", "corral.client._join")
    assert not _client_private("corral.cli._x", "corral.client.Client")
    assert _server_sides("corral.worker.agent", "corral.coordinator.store")
    assert not _server_sides("corral.worker.agent", "corral.worker.cache")
    assert ("corral.mapreduce._driver", "corral.client") in seen
    assert _mapreduce("corral.mapreduce._driver", "corral.protocol")
    assert not _mapreduce("corral.mapreduce._driver", "corral.mapreduce._keys")
