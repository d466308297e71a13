"""`slurm`: each worker one Slurm batch job (`sbatch`), cancelled with `scancel`.

    --scale slurm:partition=short,time=2:00:00,slots=4,memory=8G,python=/shared/venv/bin/python

A launch writes a batch script into the provider's directory and submits it with
`sbatch --parsable`; the job id is the handle. The job asks for `slots` CPUs
(`--cpus-per-task`) and `memory` (`--mem`), and runs `python -m corral worker` in the
foreground with its work directory in the node's `$TMPDIR`, so the worker lives exactly as
long as its job: a worker that leaves (drained) ends the job, a job Slurm ends (time limit,
preemption, `scancel`) takes its worker with it. The script holds no secret: the worker's
CORRAL_TOKEN or CORRAL_JOIN is in sbatch's environment, which the job inherits
(`--export=ALL`, Slurm's default).

`stop` (the worker drained and left, or its launch was given up) runs `scancel`, which is a
no-op for a job that already ended. `exited` reads `squeue` for the job: a job that ended, or
that Slurm no longer knows, will never bring its worker, and its state is the reason.

Options: `partition`, `account`, `qos`, `time` (Slurm's `--time`), `python` (the interpreter
with corral on the compute nodes; default: the coordinator's own, right on a shared
filesystem), `conf` (a slurm.conf for the Slurm commands, as `SLURM_CONF`).

As dask-jobqueue does; unlike Slurm's own power saving (`ResumeProgram`), it needs no change to
the cluster's configuration, only the right to submit jobs.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import ClassVar

from .base import ProviderError, ScaleError, Start, WorkerProvider, environ

__all__ = ["SlurmProvider", "batch_script", "job_ended", "parse_sbatch"]

# squeue states of a job that may still bring its worker (anything else: it ended)
LIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "RESIZING", "REQUEUED", "SUSPENDED"}
    | {"REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
)
_DIRECTIVES = ("partition", "account", "qos", "time")


def batch_script(
    start: Start,
    python: str,
    log: str,
    memory: int | None = None,
    directives: Mapping[str, str] | None = None,
) -> str:
    """The batch script of one worker job: #SBATCH lines, then the worker in the foreground."""
    lines = [
        "#!/bin/sh",
        f"#SBATCH --job-name=corral-{start.launch_id}",
        f"#SBATCH --output={log}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={start.slots}",
    ]
    if memory is not None:
        lines.append(f"#SBATCH --mem={max(1, memory // 2**20)}M")
    lines += [f"#SBATCH --{key}={value}" for key, value in sorted((directives or {}).items())]
    argv = [python, "-m", "corral", "worker", *start.worker_args()]
    work = f'"${{TMPDIR:-/tmp}}/corral-{start.launch_id}"'
    lines += [
        f"# corral worker {start.launch_id}; its secret comes in the job's environment",
        f"exec {shlex.join(argv)} --work-dir {work}",
    ]
    return "\n".join(lines) + "\n"


def parse_sbatch(out: str) -> str:
    """The job id in `sbatch --parsable`'s output (`ID` or `ID;CLUSTER`); ProviderError."""
    first = out.strip().splitlines()[-1] if out.strip() else ""
    job = first.split(";")[0].strip()
    if not job.isdigit():
        raise ProviderError(f"sbatch printed no job id: {out.strip()!r}")
    return job


def job_ended(job: str, squeue_out: str, returncode: int, stderr: str) -> str | None:
    """Why a worker's job will never bring its worker, from `squeue --states=all
    --format=%T --jobs=JOB`; None while it is queued or running."""
    if returncode != 0:
        if "invalid job id" in stderr.lower():
            return f"Slurm job {job} is no longer known to Slurm"
        return None  # squeue itself failed (slurmctld busy?): ask again later
    states = squeue_out.split()
    if not states:
        return f"Slurm job {job} is no longer known to Slurm"
    if states[0] in LIVE_STATES:
        return None
    return f"Slurm job {job} ended: {states[0]}"


class SlurmProvider(WorkerProvider):
    """Workers as Slurm batch jobs."""

    kind = "slurm"
    OPTIONS: ClassVar[frozenset[str]] = frozenset({*_DIRECTIVES, "python", "conf"})

    def check(self) -> None:
        """No directive may smuggle a second line into the script."""
        for key, value in self.extra.items():
            if "\n" in value or "\r" in value:
                raise ScaleError(f"--scale slurm: {key}= must be one line")
        self.python = self.extra.get("python", sys.executable)
        self.directives = {k: v for k, v in self.extra.items() if k in _DIRECTIVES}

    async def _slurm(self, argv: Sequence[str], env: Mapping[str, str]) -> tuple[int, str, str]:
        full = dict(env)
        if "conf" in self.extra:
            full["SLURM_CONF"] = self.extra["conf"]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=full,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        except FileNotFoundError as exc:
            raise ProviderError(f"{argv[0]} is not installed here (Slurm's client)") from exc
        except (OSError, TimeoutError) as exc:
            raise ProviderError(f"{argv[0]}: {exc or 'no answer in 60 s'}") from exc
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def launch(self, start: Start) -> str:
        """Submit the worker's job; the handle is its job id."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        script = self.state_dir / f"{start.launch_id}.sh"
        log = self.state_dir / f"{start.launch_id}.log"
        script.write_text(
            batch_script(start, self.python, str(log), self.options.memory, self.directives)
        )
        code, out, err = await self._slurm(["sbatch", "--parsable", str(script)], environ(start))
        if code != 0:
            script.unlink(missing_ok=True)
            lines = err.strip().splitlines()
            raise ProviderError(f"sbatch failed: {lines[-1] if lines else f'exit {code}'}")
        return parse_sbatch(out)

    async def exited(self, handle: str) -> str | None:
        """Why the job will never bring its worker (it ended), or None."""
        argv = ["squeue", "--noheader", "--states=all", "--format=%T", f"--jobs={handle}"]
        code, out, err = await self._slurm(argv, os.environ)
        return job_ended(handle, out, code, err)

    async def stop(self, handle: str) -> None:
        """scancel the job (nothing happens to one that already ended)."""
        code, _, err = await self._slurm(["scancel", handle], os.environ)
        if code != 0 and "invalid job id" not in err.lower():
            lines = err.strip().splitlines()
            raise ProviderError(f"scancel {handle} failed: {lines[-1] if lines else code}")
