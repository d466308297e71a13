"""`command`: the user's own start and stop scripts, the escape hatch for any cloud CLI,
Kubernetes or batch system (as Slurm's ResumeProgram and SuspendProgram are).

    --scale command:start=/etc/corral/start-vm,stop=/etc/corral/stop-vm,max=10,slots=8

`start` runs once per launch as `start LAUNCH_ID SLOTS LABELS` (LABELS as `k=v;k=v`), with
CORRAL_LAUNCH_ID, CORRAL_SLOTS, CORRAL_LABELS, CORRAL_URL, CORRAL_WORKER_ARGS (what to give
`corral worker`: the name to use is the launch id) and CORRAL_JOIN (a join string, with TLS)
or CORRAL_TOKEN (the launch's worker token) in its environment: a secret goes in the
environment only, never on a command line other users can read. It must start the worker and
exit within `timeout` (default 60 s), the worker's own output sent elsewhere; the last line
it prints, if any, is the launch's handle (a VM name, a pod, a job id), else the launch id.
A non-zero exit fails the launch with the last line of its stderr.

`stop` (optional) runs as `stop HANDLE` once the worker drained and left, or when its launch
was given up (it never joined within `join_timeout`): it makes sure the machine is gone.

Each script's output goes to `<state_dir>/<launch>.start.log` and `.stop.log`, kept when
the script failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import ClassVar

from ...protocol import parse_duration
from .base import ProviderError, ScaleError, Start, WorkerProvider, environ

__all__ = ["CommandProvider"]


class CommandProvider(WorkerProvider):
    """Workers started and stopped by the user's scripts."""

    kind = "command"
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"start", "stop", "timeout"})

    def check(self) -> None:
        """start= is required; start= and stop= must be executable files."""
        self.start_script = self.require("start")
        self.stop_script = self.extra.get("stop", "")
        for key, path in (("start", self.start_script), ("stop", self.stop_script)):
            if path and not os.access(path, os.X_OK):
                raise ScaleError(f"--scale command: {key}={path} is not an executable file")
        try:
            self.timeout = parse_duration(self.extra.get("timeout", "60s"))
        except ValueError as exc:
            raise ScaleError(f"--scale command: timeout={exc}") from exc

    async def launch(self, start: Start) -> str:
        """Run the start script; its last line of output is the handle."""
        labels = ";".join(f"{k}={v}" for k, v in sorted(start.labels.items()))
        argv = [self.start_script, start.launch_id, str(start.slots), labels]
        out = await self._run(argv, start.launch_id, "start", environ(start))
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        return lines[-1] if lines else start.launch_id

    async def stop(self, handle: str) -> None:
        """Run the stop script with the handle, if there is one."""
        if self.stop_script:
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in handle)[:100]
            await self._run([self.stop_script, handle], name, "stop", dict(os.environ))

    async def _run(self, argv: list[str], name: str, what: str, env: dict[str, str]) -> str:
        """Run a script with its output in a log file (a worker it leaves running may hold
        the file open, which a pipe would wait for); what it printed on stdout."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        out, log = (self.state_dir / f"{name}.{what}.{ext}" for ext in ("out", "log"))
        try:
            with open(out, "wb") as stdout, open(log, "wb") as stderr:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    env=env,
                    start_new_session=True,  # its own group: a timeout kills all of it
                )
        except OSError as exc:
            raise ProviderError(f"cannot run the {what} script {argv[0]}: {exc}") from exc
        try:
            code = await asyncio.wait_for(proc.wait(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise ProviderError(
                f"the {what} script did not finish within {self.timeout:g} s"
            ) from None
        printed = out.read_text(errors="replace")
        out.unlink(missing_ok=True)
        if code != 0:
            raise ProviderError(f"the {what} script exited with {code}: {_last_line(log)}")
        log.unlink(missing_ok=True)
        return printed


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "(no output)"
