"""The user's own code reaches the workers with no deployment: cloudpickle by value.

cloudpickle pickles a class from `__main__` by value, but a class from an importable module
by reference, which a worker cannot import unless the same project is installed there. So
before a job is sent, every module loaded from outside the interpreter's installed roots
(the standard library and site-packages) is registered to be pickled by value: the job's
class, the classes it derives from and the helpers it imports travel inside the task's
pickle, wherever they were imported from. Registering a module the job does not use costs
nothing. What is installed (and corral itself) stays by reference and must be installed on
the workers: the same Python minor version (a function task requires it), and any
third-party package the job imports. Rejected: only the class's own project directory (a
class deriving from one in another directory on sys.path failed on the workers).
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import cloudpickle

__all__ = ["project_modules", "ship_by_value"]


def _installed_roots() -> list[Path]:
    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    return [Path(p).resolve() for k in keys if (p := sysconfig.get_paths().get(k))]


def _file(module: ModuleType) -> Path | None:
    name = getattr(module, "__file__", None)
    return Path(name).resolve() if name else None


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(r) for r in roots)


def project_modules() -> list[str]:
    """Top-level modules loaded from outside the installed roots: the user's own code,
    wherever it was imported from (the working directory, a script's directory, sys.path)."""
    installed = _installed_roots()
    found = []
    for name, module in list(sys.modules.items()):
        path = _file(module)
        if "." in name or path is None or name in ("corral", "__main__"):
            continue
        if not _inside(path, installed):
            found.append(name)
    return sorted(found)


def ship_by_value() -> None:
    """Have cloudpickle send the user's own modules by value."""
    for name in project_modules():
        cloudpickle.register_pickle_by_value(sys.modules[name])
