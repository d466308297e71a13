"""Function tasks, the caller's half: pickle a call into blobs, and decode what comes back.

A function task ships three kinds of input file (all named in `corral.worker.pyrunner`):

- `corral-fn.pkl`: the function, cloudpickled once per submit (once per `map`);
- `corral-call.pkl`: a plain pickle of the calls to make: for each, its positional and keyword
  arguments, each argument cloudpickled on its own;
- `corral-arg-<sha256>.pkl`: any argument whose pickle is over `LARGE` bytes, as its own blob.

Arguments are pickled one by one so that a large argument shared by many tasks becomes the
same bytes, hence the same content address, and is uploaded once (the coordinator is asked
which hashes it lacks, and the dispatcher remembers what it already sent). Identical bytes is
the only dedupe: the same array pickled twice is hashed twice but sent once.

The task runs `python3 -m corral.worker.pyrunner`; the worker runs that with its own
interpreter (so corral and cloudpickle are importable in the task's clean environment), and
`python=<major.minor>` is required so the interpreter matches the caller's.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from ..protocol import InputRef, Task, TaskSpec
from ._deps import DependencyResult
from ._errors import CorralError

FN_FILE = "corral-fn.pkl"
CALL_FILE = "corral-call.pkl"
RESULT_FILE = "corral-result.pkl"
RUNNER = ["python3", "-m", "corral.worker.pyrunner", FN_FILE, CALL_FILE, RESULT_FILE]
LARGE = 64 * 1024
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


class SerializationError(CorralError, TypeError):
    """A function or argument cannot be pickled, so it cannot be sent to the farm."""


class TaskFailed(CorralError):
    """A task ended without a result: killed, lost, out of time, or the command failed."""

    def __init__(self, task: Task) -> None:
        why = task.error or (f"exit code {task.exit_code}" if task.exit_code else task.status)
        super().__init__(f"task {task.id} {task.status}: {why}; see `corral logs {task.id}`")
        self.task = task


class RemoteError(CorralError):
    """Stands in for a remote exception that could not be brought back as itself."""


class RemoteTraceback(Exception):
    """The remote traceback text, set as `__cause__` of a re-raised remote exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def _dumps(obj: Any, what: str) -> bytes:
    try:
        return bytes(cloudpickle.dumps(obj))
    except Exception as exc:  # pickling can fail with almost any exception type
        raise SerializationError(
            f"cannot send {what} to the farm: it cannot be pickled ({type(exc).__name__}: {exc})"
        ) from exc


def dump_function(fn: Callable[..., Any]) -> bytes:
    """The function's pickle; a clear SerializationError if it cannot be pickled."""
    if not callable(fn):
        raise SerializationError(f"{fn!r} is not callable")
    return _dumps(fn, f"function {getattr(fn, '__qualname__', fn)!r}")


@dataclass
class Payload:
    """A function task's input files by name, and the blobs behind them by hash."""

    files: dict[str, str]  # task-relative name -> sha256
    blobs: dict[str, bytes]  # sha256 -> bytes

    def add(self, name: str, data: bytes) -> None:
        """Add one input file."""
        sha = hashlib.sha256(data).hexdigest()
        self.files[name] = sha
        self.blobs[sha] = data


def _argument(value: Any, where: str, payload: Payload) -> tuple[str, Any]:
    if isinstance(value, DependencyResult):  # a future's result, staged by the worker
        return ("r", value.file)
    data = _dumps(value, f"argument {where}")
    if len(data) <= LARGE:
        return ("p", data)
    name = f"corral-arg-{hashlib.sha256(data).hexdigest()}.pkl"
    payload.add(name, data)
    return ("f", name)


def build_payload(
    fn_pickle: bytes, calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], chunked: bool
) -> Payload:
    """Pickle the calls (each argument on its own) into a task's input files."""
    payload = Payload({}, {})
    payload.add(FN_FILE, fn_pickle)
    encoded = []
    for args, kwargs in calls:
        pos = [_argument(a, f"#{i}", payload) for i, a in enumerate(args)]
        kw = {k: _argument(v, repr(k), payload) for k, v in kwargs.items()}
        encoded.append((pos, kw))
    payload.add(CALL_FILE, pickle.dumps({"v": 1, "chunked": chunked, "calls": encoded}))
    return payload


def function_spec(payload: Payload, options: dict[str, Any], name: str) -> TaskSpec:
    """The TaskSpec running a payload; `python` is required to match this interpreter.

    `options["outputs"]` adds patterns of files the function writes in its working
    directory (the task directory) to bring back besides its result; `options["name"]`
    names the task (the function's name by default)."""
    requires = {"python": PYTHON, **options.get("requires", {})}
    inputs = {n: InputRef(sha, len(payload.blobs[sha])) for n, sha in payload.files.items()}
    extra = options.get("outputs", ())
    if isinstance(extra, str):
        raise TypeError("outputs= takes a list of patterns, not one string")
    return TaskSpec(
        argv=list(RUNNER),
        env=dict(options.get("env", {})),
        inputs=inputs,
        outputs=[RESULT_FILE, *(str(o) for o in extra)],
        requires=requires,
        limits=dict(options.get("limits", {})),
        max_attempts=int(options.get("max_attempts", 3)),
        name=str(options.get("name") or name),
    )


@dataclass
class Outcome:
    """A decoded result: the value, or the exception and what ran before it in a chunk."""

    value: Any = None
    error: BaseException | None = None
    partial: list[Any] | None = None


def _remote_exception(record: tuple[Any, ...], task: Task) -> BaseException:
    _, exc_pickle, type_name, message, tb_text = record[:5]
    exc: BaseException | None = None
    if exc_pickle is not None:
        try:
            loaded = pickle.loads(exc_pickle)
        except Exception:
            loaded = None  # its class may not exist here: fall back to the text
        exc = loaded if isinstance(loaded, BaseException) else None
    if exc is None:
        exc = RemoteError(f"{type_name}: {message}")
    exc.__cause__ = RemoteTraceback(tb_text)
    exc.add_note(f"raised remotely in corral task {task.id}")
    return exc


def decode_result(data: bytes | None, task: Task) -> Outcome:
    """What a function task returned or raised; TaskFailed when it left no result."""
    if data is None:
        return Outcome(error=TaskFailed(task))
    try:
        record = pickle.loads(data)
    except Exception as exc:
        err = RemoteError(f"task {task.id}: cannot unpickle its result here: {exc}")
        return Outcome(error=err)
    if record[0] == "ok":
        return Outcome(value=record[1])
    return Outcome(error=_remote_exception(record, task), partial=list(record[5] or []))


__all__ = [
    "CALL_FILE",
    "FN_FILE",
    "LARGE",
    "PYTHON",
    "RESULT_FILE",
    "RUNNER",
    "Outcome",
    "Payload",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "TaskFailed",
    "build_payload",
    "decode_result",
    "dump_function",
    "function_spec",
]
