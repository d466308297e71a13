"""The client package's shape: no import cycle inside it, and two clients with one API."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import corral.client
from corral.client import AsyncClient, Client

PACKAGE = Path(corral.client.__file__).parent


def client_imports() -> dict[str, set[str]]:
    """For each module of corral.client, the modules of corral.client it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:  # from ._x import y
                    found.add(node.module.split(".")[0])
                else:  # from . import _x
                    found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[:2] == ["corral", "client"] and len(parts) > 2:
                    found.add(parts[2])
        graph[path.stem] = found - {path.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path of module names, or [] when there is none."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return []
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return []

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return []


def test_the_graph_reader_sees_imports_and_finds_cycles() -> None:
    graph = client_imports()
    assert {"_core", "_futures", "_dispatch"} <= graph["_async"]  # `from . import _core` too
    assert "_async" in graph["_client"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_client_package_imports_itself_one_way() -> None:
    assert find_cycle(client_imports()) == []


def test_the_sans_io_core_and_the_dispatcher_import_no_client() -> None:
    graph = client_imports()
    clients = {"_client", "_async", "_current", "_executor", "_joblib"}
    for module in ("_core", "_dispatch", "_futures", "_submission", "_outcomes", "_tasks"):
        assert not graph[module] & clients, module


def public_methods(cls: type) -> dict[str, list[str]]:
    """Public methods by name, each with its parameter names."""
    return {
        name: list(inspect.signature(member).parameters)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_client_and_async_client_have_the_same_methods_and_parameters() -> None:
    sync, asynchronous = public_methods(Client), public_methods(AsyncClient)
    assert sync.pop("close") == asynchronous.pop("aclose") == ["self"]
    assert sorted(sync) == sorted(asynchronous)
    assert sync == asynchronous
    for name in ("allow", "put_blob", "upload", "submit_with", "tokens", "audit"):
        assert name in asynchronous


def test_async_client_methods_that_talk_to_the_coordinator_are_coroutines() -> None:
    # return futures at once, or group the calls that do
    futures = {"submit", "submit_with", "submit_command", "map", "as_job"}
    for name in public_methods(AsyncClient):
        method = getattr(AsyncClient, name)
        talks = inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)
        assert talks != (name in futures), name
        if name not in futures:
            assert not inspect.iscoroutinefunction(getattr(Client, name, None)), name


def test_both_clients_take_a_transport() -> None:
    for cls in (Client, AsyncClient):
        parameter = inspect.signature(cls).parameters["transport"]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None


def imported(path: Path, package: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line, dotted name as parts) of each module a file imports, relative ones resolved."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name.split(".")) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = [*base, *node.module.split(".")] if node.module else base
            yield node.lineno, module
            # from x import _y: each name may be a module of its own
            yield from ((node.lineno, [*module, alias.name]) for alias in node.names)


def test_nothing_outside_the_client_imports_its_private_modules() -> None:
    src = PACKAGE.parent
    reaching = []
    for path in sorted(src.rglob("*.py")):
        if path.is_relative_to(PACKAGE):
            continue
        package = ["corral", *path.relative_to(src).parent.parts]
        for line, parts in imported(path, package):
            if parts[:2] == ["corral", "client"] and parts[2:3] and parts[2].startswith("_"):
                reaching.append(f"{path.relative_to(src)}:{line}")
    assert reaching == []
