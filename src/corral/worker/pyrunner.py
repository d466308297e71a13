"""Runs one function task: `python3 -m corral.worker.pyrunner FN CALL RESULT`.

FN is the cloudpickled function; CALL a plain pickle of `{"v": 1, "chunked": bool, "calls":
[(args, kwargs), ...]}` where each argument is `("p", pickle bytes)`, `("f", file name)` or
`("r", file name)`: a dependency's RESULT file, its value passed (a future as an argument).
RESULT receives a plain pickle of `("ok", value)` (a list of values when chunked), or
`("error", exception pickle or None, type name, message, traceback text, values before it)`;
the process then exits 1 so the task shows as failed.

Workers run tasks in a clean environment, so `python3` on PATH may lack corral and
cloudpickle: the worker replaces the leading `python3 -m corral.worker.pyrunner` with its own
interpreter (`runner_argv`). The task requires `python=<major.minor>` of the caller, and the
worker reports its own interpreter's version, so the versions match.
"""

from __future__ import annotations

import pickle
import sys
import traceback
from pathlib import Path
from typing import Any

MODULE = "corral.worker.pyrunner"


def runner_argv(argv: list[str], python: str = sys.executable) -> list[str]:
    """Run this module with the worker's own interpreter rather than whatever is on PATH."""
    if len(argv) >= 3 and argv[0] == "python3" and argv[1:3] == ["-m", MODULE]:
        return [python, *argv[1:]]
    return list(argv)


def _argument(spec: tuple[str, Any]) -> Any:
    kind, value = spec
    if kind == "r":  # a future passed as an argument: its task's result file, staged here
        path = Path(value)
        if not path.is_file():
            raise RuntimeError(f"the result of a dependency ({value}) was not staged")
        return pickle.loads(path.read_bytes())[1]  # ("ok", value): it succeeded
    if kind == "f":
        return pickle.loads(Path(value).read_bytes())
    return pickle.loads(value)


def _error(exc: BaseException, done: list[Any]) -> bytes:
    import cloudpickle

    tb = "".join(traceback.format_exception(exc))
    try:
        exc_pickle: bytes | None = cloudpickle.dumps(exc)
        pickle.loads(exc_pickle)  # type: ignore[arg-type]
    except Exception:
        exc_pickle = None
    try:
        partial = cloudpickle.dumps(done)
        values: list[Any] | None = done
        del partial
    except Exception:
        values = None
    record = ("error", exc_pickle, type(exc).__qualname__, str(exc), tb, values)
    return bytes(cloudpickle.dumps(record))


def run(fn_file: Path, call_file: Path) -> tuple[bytes, int]:
    """Make the calls; the result record to write and the exit code."""
    import cloudpickle

    done: list[Any] = []
    try:
        fn = pickle.loads(fn_file.read_bytes())
        call = pickle.loads(call_file.read_bytes())
        for args, kwargs in call["calls"]:
            pos = [_argument(a) for a in args]
            kw = {k: _argument(v) for k, v in kwargs.items()}
            done.append(fn(*pos, **kw))
        value = done if call["chunked"] else done[0]
        return bytes(cloudpickle.dumps(("ok", value))), 0
    except BaseException as exc:  # the caller gets it back, whatever it is
        return _error(exc, done), 1


def main(argv: list[str]) -> int:
    """Entry point: run the calls and write the result file."""
    if len(argv) != 3:
        print(f"usage: python3 -m {MODULE} FN CALL RESULT", file=sys.stderr)
        return 2
    record, code = run(Path(argv[0]), Path(argv[1]))
    Path(argv[2]).write_bytes(record)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
