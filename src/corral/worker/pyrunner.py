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

`python3 -m corral.worker.pyrunner --serve` is the same thing kept alive for many calls (the
worker's function-runner pool, fnpool.py). A request with `"exec": argv` instead of `argv`
runs that command as a child, the way a fresh task process runs (a command task hosted in
the runner's sandbox, so it does not pay for a sandbox of its own).

Its stdin is a unix SEQPACKET socket: each request is one msgpack message
`{"argv": [FN, CALL, RESULT], "cwd", "env"}` carrying two descriptors, the task's stdout
and stderr files (which the sandbox cannot otherwise reach). It makes the calls
in `cwd` with `env` as its environment and those files as fds 1 and 2, writes RESULT as above,
and answers on stdout with the exit code a fresh process would have had (`ready` first, once
started), then ` cpu=` and ` peak=` (what the call used), ` threads=` (how many this process
has now), and ` dirty` when processes the call started are still there: the worker then
kills the runner's whole tree, as it kills a fresh process's. With `--pidns` (a sandbox of
its own) every process in its PID namespace but init and itself counts; else its children.
A request with `make` has the runner make `cwd` and write the task's inputs first, and one
with `collect` has it report what the call made or changed there (` found=N`, then N bytes
after the line): _inside.py.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the serving runner's own imports are made once it serves (`_serve_main`)
    from .outputs import Snapshot

MODULE = "corral.worker.pyrunner"
SERVE = "--serve"
PIDNS = "--pidns"
READY = b"ready\n"
MAX_REQUEST = 1 << 20
STAGING_FAILED = 125  # the exit code of a call whose inputs could not be written
_BEFORE: dict[str, Snapshot] = {}  # cwd -> its snapshot, from `make` to `collect`
_ENV: tuple[dict[str, str], dict[bytes, bytes]] | None = None  # the last call's env, as set
_PR_SET_PDEATHSIG = 1


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


def call_once(argv: list[str]) -> int:
    """Make the calls of one task and write its result file; the exit code."""
    record, code = run(Path(argv[0]), Path(argv[1]))
    Path(argv[2]).write_bytes(record)
    return code


def _children() -> list[int]:
    """This process's children, from /proc (cheap: no scan of every process)."""
    pids: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def _reap() -> None:
    """Collect children that have exited: they are not left running."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def leftovers(pidns: bool) -> bool:
    """Whether a process the call started is still there (in our PID namespace, or a child)."""
    _reap()
    if pidns:
        mine = {1, os.getpid()}
        return any(name.isdigit() and int(name) not in mine for name in os.listdir("/proc"))
    return bool(_children())


def _settle(null: int) -> None:
    """Flush what the call printed to its files, then point fds 1 and 2 back at /dev/null."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if sys.__stdout__ is not None and sys.__stderr__ is not None:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    os.dup2(null, 1)
    os.dup2(null, 2)


def _set_env(env: dict[str, str]) -> None:
    """Make `env` the environment: only what differs from the last call's is set (most of a
    seat's environment stays the same; clearing and refilling os.environ cost more than the
    call), unless the call changed it meanwhile."""
    global _ENV
    data = getattr(os.environ, "_data", None)  # what os.environ holds, encoded
    last, _ENV = _ENV, None
    if last is None or data is None or data != last[1]:
        os.environ.clear()
        os.environ.update(env)
    else:
        for key in last[0].keys() - env.keys():
            del os.environ[key]
        for key, value in env.items():
            if last[0].get(key) != value:
                os.environ[key] = value
    if data is not None:
        _ENV = (dict(env), dict(data))


def serve_call(request: dict[str, Any], out: int, err: int, null: int) -> int:
    """One request: the task's cwd (made here, with its inputs, when it says `make`),
    environment and output files, then `call_once`."""
    _set_env(request["env"])
    tempfile.tempdir = None  # TMPDIR is the task's own directory: look it up again
    os.dup2(out, 1)
    os.dup2(err, 2)
    try:
        if "make" in request:
            from ._inside import prepare

            try:
                _BEFORE.clear()
                _BEFORE[request["cwd"]] = prepare(
                    request["cwd"], request["make"], request.get("reuse")
                )
            except OSError as exc:
                print(f"staging inputs: {exc}", file=sys.stderr)
                return STAGING_FAILED
        os.chdir(request["cwd"])
        if "exec" in request:  # a command task hosted in this runner's sandbox
            return _exec(request["exec"])
        sys.argv = [__file__, *request["argv"]]
        return call_once(request["argv"])
    except BaseException:  # what an uncaught error does to a fresh process
        traceback.print_exc()
        return 1
    finally:
        _settle(null)


def _exec(argv: list[str]) -> int:
    """Run a command as a fresh task process would run: in its own session, stdin from
    /dev/null, fds 1 and 2 and the environment and cwd set for this call."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        print(f"cannot start {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    return done.returncode


# What a call used, as a fresh process's cgroup would count it: the runner's own CPU and its
# children's, measured around the call, and for a function call the runner's peak RSS, reset
# before it (5 written to /proc/self/clear_refs resets VmHWM). A hosted command's peak is not
# known: a forked child's maxrss starts at its parent's size, exec or not.
def _cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_now() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def measured(request: dict[str, Any], out: int, err: int, null: int) -> str:
    """`serve_call`, answered as the worker reads it: `CODE cpu=SECONDS [peak=BYTES]`."""
    reset = "exec" not in request and _reset_peak()
    before = _cpu_now()
    code = serve_call(request, out, err, null)
    cpu = max(0.0, _cpu_now() - before)
    peak = _peak_now() if reset else None
    return f"{code} cpu={cpu:.3f}" + ("" if peak is None else f" peak={peak}")


def _receive(requests: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """The next request and its two descriptors; None once the worker has closed the socket."""
    import msgspec

    data, fds, flags, _ = socket.recv_fds(requests, MAX_REQUEST, 2)
    if not data:
        return None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 2:
        raise RuntimeError("a request did not come whole")
    return msgspec.msgpack.decode(data), fds


def _threads() -> int:
    """How many threads this process has (a call may have left some running)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 2  # cannot tell: as if it had


def _found(request: dict[str, Any]) -> bytes:
    """What the call made or changed in its cwd (`_inside.collect`), encoded; nothing when
    the request did not ask."""
    globs = request.get("collect")
    if globs is None:
        return b""
    import msgspec

    from ._inside import collect

    # kept till the next `make`: a checkpointed task runs again in the same cwd
    before = _BEFORE.get(request["cwd"], {})
    found = collect(request["cwd"], before, globs, *request.get("budget", (0, 0)))
    return msgspec.msgpack.encode(found)


def serve(requests: socket.socket, reply: int, null: int, pidns: bool) -> int:
    """Answer requests until the worker closes the socket."""
    os.write(reply, READY)
    while received := _receive(requests):
        request, (out, err) = received
        try:
            answer = measured(request, out, err, null)
        finally:
            os.close(out)
            os.close(err)
        found = _found(request)
        dirty = " dirty" if leftovers(pidns) else ""
        more = f" threads={_threads()}" + (f" found={len(found)}" if "collect" in request else "")
        _write_all(reply, f"{answer}{more}{dirty}\n".encode() + found)
    return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _die_with_parent() -> None:
    """Be killed when the worker dies (stopped between calls, we would not notice)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # it died already
        os._exit(1)


def _serve_main(pidns: bool) -> int:
    """Keep the request socket and the answer pipe to ourselves; 0, 1, 2 go to /dev/null."""
    for module in ("cloudpickle", "msgspec", "corral.worker._inside"):  # once, here
        importlib.import_module(module)
    if not pidns:  # in a sandbox, bwrap's --die-with-parent sees to it
        _die_with_parent()
    requests, reply = socket.socket(fileno=os.dup(0)), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    with requests:
        return serve(requests, reply, null, pidns)


def main(argv: list[str]) -> int:
    """Entry point: run the calls and write the result file."""
    if argv and argv[0] == SERVE and argv[1:] in ([], [PIDNS]):
        return _serve_main(pidns=argv[1:] == [PIDNS])
    if len(argv) != 3:
        print(f"usage: python3 -m {MODULE} FN CALL RESULT", file=sys.stderr)
        return 2
    return call_once(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
