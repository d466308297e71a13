"""One `pyrunner --serve` process as the worker's function-runner pool sees it (fnpool.py):
requests with two descriptors down a socket, answers up its stdout (pyrunner.py says what
they hold), and the stop (SIGSTOP, until every thread is) and start again between calls."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from typing import Any

import msgspec
import psutil

from ._inside import Found
from .executor import kill_tree
from .guard import Launch
from .pyrunner import MODULE, READY, SERVE

__all__ = ["Runner"]

_STOP_TIMEOUT = 5.0
_FREEZE_TIMEOUT = 2.0


class Runner:
    """One `pyrunner --serve` process: requests on a socket, exit codes on its stdout."""

    def __init__(
        self, proc: asyncio.subprocess.Process, requests: socket.socket, launch: Launch
    ) -> None:
        self.proc = proc
        self.requests = requests
        self.launch = launch  # its cgroup (what a call daemonized too) and its user
        self.exited: asyncio.Future[int] = asyncio.ensure_future(proc.wait())
        self.pid = proc.pid  # the Python process itself (under bwrap, a descendant of proc)
        self.dirty = False  # the last call left a process behind
        self.used: tuple[int | None, float | None] = (None, None)  # the last call's peak, CPU
        self.threads = 1  # how many threads it had after the last call
        self.found: Found | None = None  # what the last call made or changed (_inside.py)
        self.frozen = False  # stopped (SIGSTOP) until its next call

    @property
    def alive(self) -> bool:
        """Whether it still runs."""
        return self.proc.returncode is None

    async def ready(self) -> bool:
        """Wait for its first line: `ready` once it has started, nothing if it died."""
        if await self._line() != READY:
            return False
        self.pid = _python_pid(self.proc.pid)  # under bwrap, bwrap's processes come first
        return self.pid > 0

    async def answer(self) -> int | None:
        """The exit code the call in progress would have had; None when it died in the call.
        What the call used is left in `used` (pyrunner.measured's `cpu=` and `peak=`)."""
        code, *rest = (await self._line()).split() or [b""]
        self.dirty = b"dirty" in rest
        fields = dict(w.split(b"=", 1) for w in rest if b"=" in w)
        self.used = (_number(fields.get(b"peak"), int), _number(fields.get(b"cpu"), float))
        self.threads = _number(fields.get(b"threads"), int) or 2  # unknown: as if it had
        self.found = None
        size = _number(fields.get(b"found"), int)
        if size is not None:
            self.found = await self._found(size)
            if self.found is None:
                return None  # it died while answering
        try:
            return int(code)
        except ValueError:
            return None

    async def _found(self, size: int) -> Found | None:
        assert self.proc.stdout is not None
        try:
            data = await self.proc.stdout.readexactly(size)
            return msgspec.msgpack.decode(data, type=Found)
        except (asyncio.IncompleteReadError, msgspec.DecodeError):
            return None

    async def _line(self) -> bytes:
        assert self.proc.stdout is not None
        reading = asyncio.ensure_future(self.proc.stdout.readline())
        either: set[asyncio.Future[Any]] = {reading, self.exited}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not reading.done():
            reading.cancel()
            return b""
        return reading.result()

    def send(self, request: dict[str, Any], fds: list[int]) -> bool:
        """Send one request with its descriptors; False when it can no longer take one."""
        if not self.alive:
            return False
        try:
            socket.send_fds(self.requests, [msgspec.msgpack.encode(request)], fds)
        except OSError:  # gone, or a request too large for one message
            return False
        return True

    async def freeze(self) -> bool:
        """Stop it until the next call; False if some thread of it did not stop."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True
        deadline = time.monotonic() + _FREEZE_TIMEOUT
        tries = 0
        while not _stopped(self.pid):
            if time.monotonic() > deadline or not self.alive:
                return False
            # it stops as soon as it gets a CPU: yield at first, sleep only if that is slow
            await asyncio.sleep(0 if tries < 20 else 0.001)
            tries += 1
        return True

    def thaw(self) -> None:
        """Let it run again (if it was stopped)."""
        if self.frozen:
            self.frozen = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)

    async def stop(self) -> None:
        """Kill its process tree and reap it, and whatever else is in its cgroup."""
        kill_tree(self.proc.pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), _STOP_TIMEOUT)
        self.requests.close()
        if self.launch.cgroup is not None:
            await asyncio.to_thread(self.launch.close)
        self.launch.release()


def _number(text: bytes | None, kind: type[int] | type[float]) -> Any:
    """A number from a runner's answer, or None."""
    try:
        return None if text is None else kind(text)
    except ValueError:
        return None


def _python_pid(leader: int) -> int:
    """The runner's Python process among `leader` and its descendants (0 if not found)."""
    try:
        procs = [psutil.Process(leader), *psutil.Process(leader).children(recursive=True)]
        found = [p.pid for p in procs if p.cmdline()[1:4] == ["-m", MODULE, SERVE]]
    except psutil.Error:
        return 0
    return found[0] if len(found) == 1 else 0


def _stopped(pid: int) -> bool:
    """Whether every thread of a process is stopped (or gone)."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
            if state not in (b"T", b"t", b"Z", b"X"):
                return False
    except (OSError, IndexError):
        return True  # gone
    return True
