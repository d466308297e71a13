"""`local`: workers as `corral worker` processes on the coordinator's own machine.

Each launch is a fresh interpreter (`python -m corral worker`), its token in its
environment, its output in `<state_dir>/<launch>.log` (kept only when it did not exit
cleanly), its work directory `<state_dir>/<launch>/`. `stop` is called once the worker
drained and left: it waits for the process, and SIGTERMs (then SIGKILLs) one that is still
there, as `corral up` does.

Rejected: forking workers from the coordinator, as `corral up` does for its first workers to
save the interpreter's start. A coordinator serving requests has threads and an event loop
running, and a fork then copies their locks in whatever state they are in.

Options: `sandbox=off` (tasks without bubblewrap), `network=on` (give tasks that ask the
network), `grace=S` (the workers' --checkpoint-grace), `hide=PATH` (another --sandbox-hide).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from typing import ClassVar

from .base import ProviderError, ScaleError, Start, WorkerProvider, environ

__all__ = ["LocalProvider"]

_SWITCH = {"on": True, "yes": True, "1": True, "off": False, "no": False, "0": False}


class LocalProvider(WorkerProvider):
    """Worker processes on this machine."""

    kind = "local"
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"sandbox", "network", "grace", "hide"})

    def check(self) -> None:
        """sandbox and network are on/off; grace a number of seconds."""
        for key in ("sandbox", "network"):
            if self.extra.get(key, "on") not in _SWITCH:
                raise ScaleError(f"--scale local: {key}= takes on or off")
        try:
            self.grace = float(self.extra.get("grace", "10"))
        except ValueError as exc:
            raise ScaleError("--scale local: grace= takes seconds, like grace=10") from exc
        self.procs: dict[str, tuple[asyncio.subprocess.Process, str]] = {}  # pid -> (, launch)

    def _args(self, start: Start) -> list[str]:
        args = [*start.worker_args(), "--work-dir", str(self.state_dir / start.launch_id)]
        args += ["--checkpoint-grace", str(self.grace)]
        # the coordinator's files (its admin token among them) stay out of every sandbox
        args += ["--sandbox-hide", str(self.state_dir.parent.parent)]
        if "hide" in self.extra:
            args += ["--sandbox-hide", self.extra["hide"]]
        if not _SWITCH[self.extra.get("sandbox", "on")]:
            args.append("--no-sandbox")
        if _SWITCH[self.extra.get("network", "off")]:
            args.append("--allow-network")
        return args

    async def launch(self, start: Start) -> str:
        """Start `corral worker` as a child process; the handle is its pid."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = self.state_dir / f"{start.launch_id}.log"
        try:
            with open(log, "ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "corral",
                    "worker",
                    *self._args(start),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    env=environ(start),
                    start_new_session=True,  # a Ctrl-C to the coordinator is not the worker's
                )
        except OSError as exc:
            raise ProviderError(f"cannot start corral worker: {exc}") from exc
        self.procs[str(proc.pid)] = (proc, start.launch_id)
        return str(proc.pid)

    async def exited(self, handle: str) -> str | None:
        """The process ended before its worker joined."""
        proc, _ = self.procs.get(handle, (None, ""))
        if proc is None or proc.returncode is None:
            return None
        return f"worker process {handle} exited with code {proc.returncode} before joining"

    async def stop(self, handle: str) -> None:
        """Wait for the process; SIGTERM, then SIGKILL, one that lingers; remove its work
        directory (its log stays if it did not exit cleanly)."""
        await self._stop(handle, patience=5.0)

    async def _stop(self, handle: str, patience: float) -> None:
        if handle not in self.procs:
            return
        proc, launch_id = self.procs.pop(handle)
        steps = ((None, patience), (signal.SIGTERM, self.grace + 5.0), (signal.SIGKILL, 5.0))
        for sig, wait in steps:
            if sig is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), wait)
                break
        await asyncio.to_thread(shutil.rmtree, self.state_dir / launch_id, True)
        if proc.returncode == 0:  # it left cleanly: only a failed worker's log is worth keeping
            (self.state_dir / f"{launch_id}.log").unlink(missing_ok=True)

    async def close(self) -> None:
        """Stop every worker still running at once (the coordinator is stopping): SIGTERM
        evicts their tasks, which are requeued."""
        await asyncio.gather(*(self._stop(h, patience=0.0) for h in list(self.procs)))
