"""Checkpoints from inside a running task: `load(default)` and `save(obj)` for Python tasks,
`request()` for any program (`corral checkpoint` calls it).

A task's checkpoint is whatever it leaves in CORRAL_CHECKPOINT_DIR. `save` pickles one object
there and asks the worker to save the directory; `load` returns that object in the next run of
the task (after its worker died, or it was evicted), or `default` on its first run. Programs
that write their own files call `request()` (or `corral checkpoint`) once they have finished
writing. The request is a file the worker watches beside the checkpoint directory (so it
works in the sandbox, with no network): see worker/checkpoints.py.
"""

from __future__ import annotations

import os
import pickle
import secrets
import time
from pathlib import Path
from typing import Any

from .protocol import CHECKPOINT_ENV, REPLY_FILE, REQUEST_FILE

__all__ = ["PICKLE", "CheckpointError", "directory", "load", "request", "save"]

PICKLE = "corral-state.pickle"  # save's file in the checkpoint directory


class CheckpointError(Exception):
    """Not inside a Corral task, or the worker did not save the checkpoint."""


def directory() -> Path:
    """This task's checkpoint directory."""
    value = os.environ.get(CHECKPOINT_ENV)
    if not value:
        raise CheckpointError(f"not inside a Corral task ({CHECKPOINT_ENV} is not set)")
    return Path(value)


def request(timeout: float = 600.0) -> int:
    """Ask the worker to save the checkpoint directory as it is now, and wait until it is
    recorded; the checkpoint's number (0: the directory was empty, nothing saved)."""
    state = directory().parent
    token = secrets.token_hex(8)
    tmp = state / f".{REQUEST_FILE}.{token}"
    tmp.write_text(token)
    os.replace(tmp, state / REQUEST_FILE)  # the worker never reads half a token
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            words = (state / REPLY_FILE).read_text().split(maxsplit=2)
        except OSError:
            words = []
        if words[:1] == [token]:
            if words[1:2] == ["ok"]:
                return int(words[2])
            raise CheckpointError(f"the worker did not save it: {' '.join(words[2:])}")
        time.sleep(0.05)
    raise CheckpointError(f"no answer from the worker in {timeout:g} s")


def save(obj: Any, timeout: float = 600.0) -> int:
    """Pickle `obj` into the checkpoint directory and have it saved; its number."""
    folder = directory()
    tmp = folder / f".{PICKLE}.tmp"
    with tmp.open("wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, folder / PICKLE)
    return request(timeout)


def load(default: Any = None) -> Any:
    """The object the last saved checkpoint holds, or `default` (a first run)."""
    try:
        with (directory() / PICKLE).open("rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        return default
