"""Corral: turn a pile of ordinary machines into one compute farm.

The Python API is imported lazily, so `python3 -m corral.worker.pyrunner` and the servers do
not pay for the client's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import AsyncClient, Client, Executor, current, register_joblib

_LAZY = {
    "AsyncClient": "corral.client",
    "Client": "corral.client",
    "Executor": "corral.client",
    "current": "corral.client",
    "register_joblib": "corral.client",
}


def __getattr__(name: str) -> Any:
    if name == "checkpoint":  # a module: corral.checkpoint.load / save inside a task
        return importlib.import_module("corral.checkpoint")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'corral' has no attribute {name!r}")


__all__ = [
    "AsyncClient",
    "Client",
    "Executor",
    "__version__",
    "checkpoint",
    "current",
    "register_joblib",
]
