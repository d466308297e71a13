"""Real-farm fixtures for client tests, shared with the integration tests.

Workers here run with --no-sandbox: under bubblewrap the home directory is hidden, and with
it an interpreter installed there (pyenv, a venv in $HOME), which function tasks run with.
The module-scoped farms keep the suite fast; every test still gets its own client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.conftest import Farm, farm, isolated, isolated_env, procs, wait_for

WORKER_ARGS = ("--no-sandbox",)


def _start(root: Path, slots: int) -> Farm:
    f = Farm(root, isolated_env(root), 3.0)
    try:
        f.start_server()
        f.start_worker(slots, args=WORKER_ARGS)
    except BaseException:
        f.close()
        raise
    return f


@pytest.fixture(scope="module")
def wide_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """A coordinator and one worker with eight slots, for every test of a module."""
    f = _start(tmp_path_factory.mktemp("wide"), 8)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(scope="module")
def narrow_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """A coordinator and one worker with a single slot: a second task stays queued."""
    f = _start(tmp_path_factory.mktemp("narrow"), 1)
    try:
        yield f
    finally:
        f.close()


__all__ = [
    "WORKER_ARGS",
    "Farm",
    "farm",
    "isolated",
    "narrow_farm",
    "procs",
    "wait_for",
    "wide_farm",
]
