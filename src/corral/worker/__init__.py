"""The worker: leases tasks from a coordinator and runs them in a sandbox.

The names below are imported lazily, so `python3 -m corral.worker.pyrunner` (every function
task, and each pooled runner) does not pay for the agent's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import Agent, run_worker
    from .config import WorkerConfig
    from .state import Ask, Held, WorkerState

_LAZY = {
    "Agent": "corral.worker.agent",
    "Ask": "corral.worker.state",
    "Held": "corral.worker.state",
    "WorkerConfig": "corral.worker.config",
    "WorkerState": "corral.worker.state",
    "run_worker": "corral.worker.agent",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'corral.worker' has no attribute {name!r}")


__all__ = ["Agent", "Ask", "Held", "WorkerConfig", "WorkerState", "run_worker"]
