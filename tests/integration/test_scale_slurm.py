"""The `slurm` provider against a real single-node Slurm (Debian's slurm-wlm and munge).

The test starts its own cluster: a munge daemon with a fresh key and its own socket, then
slurmctld and slurmd in the foreground with a slurm.conf in the test's directory (ports picked
free, state and spool there too, no cgroups, no accounting). Slurm's clients (`sbatch`,
`scancel`, `squeue`) find it through `SLURM_CONF`. Every daemon is stopped by its pid.

The node claims 4 CPUs whatever the machine has (`SlurmdParameters=config_overrides`), so
several one-CPU worker jobs fit on it at once, as on a real node.

Needs root and slurm-wlm; skipped otherwise, unless CI is set (then it fails).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.coordinator.providers import Start, parse_scale
from corral.coordinator.providers.slurm import SlurmProvider
from corral.protocol import LaunchInfo, TaskSpec

from .conftest import PYTHON, Farm, free_port, stop_all, wait_for

IN_CI = bool(os.environ.get("CI"))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
DAEMONS = {name: shutil.which(name) for name in ("munged", "slurmctld", "slurmd", "sbatch")}
NODE = "providers-node"
CPUS = 4

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="slurmd runs jobs as their user: needs root")

SLURM_CONF = """\
ClusterName=providers
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={dir}/munge/socket
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    """A running single-node cluster: its config (for `SLURM_CONF`) and daemons."""

    root: Path
    conf: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *argv: str) -> str:
        """A Slurm client command against this cluster; its stdout (fails on exit != 0)."""
        done = subprocess.run(
            argv, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=15
        )
        assert done.returncode == 0, f"{argv}: {done.stderr}"
        return done.stdout

    def jobs(self) -> dict[str, str]:
        """Every job Slurm still knows: id -> state (RUNNING, CANCELLED, ...)."""
        out = self.run("squeue", "--noheader", "--states=all", "--format=%i %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    def _spawn(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.out").open("wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 30.0) -> None:
        """munged, slurmctld, slurmd; wait (bounded) until the node is idle."""
        munge = self.root / "munge"
        munge.mkdir(mode=0o711)
        (munge / "munge.key").write_bytes(secrets.token_bytes(1024))
        (munge / "munge.key").chmod(0o600)
        for sub in ("state", "spool"):
            (self.root / sub).mkdir()
        self.conf.write_text(
            SLURM_CONF.format(
                ctld_port=free_port(), d_port=free_port(), dir=self.root, node=NODE, cpus=CPUS
            )
        )
        self._spawn(
            "munged",
            str(DAEMONS["munged"]),
            "--foreground",
            "--force",
            f"--key-file={munge / 'munge.key'}",
            f"--socket={munge / 'socket'}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--seed-file={munge / 'seed'}",
            f"--log-file={self.root / 'munged.log'}",
        )
        wait_for((munge / "socket").exists, 10.0, 0.05, "munged's socket")
        self._spawn("slurmctld", str(DAEMONS["slurmctld"]), "-D", "-f", str(self.conf))
        self._spawn("slurmd", str(DAEMONS["slurmd"]), "-D", "-f", str(self.conf), "-N", NODE)

        def idle() -> bool:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise AssertionError(f"{proc.args!r} exited early\n{self.logs()}")
            done = subprocess.run(
                ["sinfo", "--noheader", "--format=%T"],
                env={**os.environ, **self.env},
                capture_output=True,
                text=True,
                timeout=10,
            )
            return done.stdout.strip() == "idle"

        wait_for(idle, timeout, 0.2, "the Slurm node to be idle")

    def stop(self) -> None:
        stop_all(list(reversed(self.procs)))


@pytest.fixture
def slurm(tmp_path: Path) -> Iterator[Slurm]:
    """A single-node Slurm cluster of this test's own, stopped at teardown."""
    missing = sorted(name for name, path in DAEMONS.items() if path is None)
    if missing:
        why = f"{', '.join(missing)} not installed (Debian: slurm-wlm munge)"
        if IN_CI:
            pytest.fail(why + "; CI must install them")
        pytest.skip(why)
    cluster = Slurm(tmp_path / "slurm", tmp_path / "slurm" / "slurm.conf")
    cluster.root.mkdir()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(60)
def test_the_single_node_slurm_runs_and_cancels_a_job(
    slurm: Slurm, farm: Callable[..., Farm]
) -> None:
    """The fixture itself: a batch job runs on the node and scancel ends it."""
    job = slurm.run("sbatch", "--parsable", f"--output={slurm.root}/%j.out", "--wrap", "sleep 30")
    job = job.strip().split(";")[0]
    wait_for(lambda: slurm.jobs().get(job) == "RUNNING", 15.0, 0.2, "the job to run")
    slurm.run("scancel", job)
    wait_for(lambda: slurm.jobs().get(job) == "CANCELLED", 15.0, 0.2, "the job to be cancelled")


@pytest.mark.timeout(60)
def test_the_provider_runs_each_worker_as_a_slurm_job(
    slurm: Slurm, farm: Callable[..., Farm], tmp_path: Path
) -> None:
    """In-process: two launches are two Slurm jobs whose workers join; `exited` sees them
    running; one drained worker ends its job by leaving, the other is scancelled; then
    `exited` says why each will never come back, as it does for a job that failed at once."""
    f = farm()
    spec = parse_scale(
        f"slurm:conf={slurm.conf},python={PYTHON},slots=2,memory=100M,time=10",
        {"slurm": SlurmProvider.OPTIONS},
    )
    provider = SlurmProvider(spec, tmp_path / "state")
    starts = [Start(f"launch-slurm-{i}", f.url, f.token, None, 2, {}) for i in (1, 2)]
    jobs = [asyncio.run(provider.launch(start)) for start in starts]
    assert len(set(jobs)) == 2 and all(j.isdigit() for j in jobs)
    with f.client() as client:

        def joined() -> dict[str, str] | None:
            ids = {w.name: w.id for w in client.workers() if w.status == "online"}
            return ids if {s.launch_id for s in starts} <= set(ids) else None

        ids = wait_for(joined, 30.0, 0.2, "both Slurm jobs' workers to join")
        assert slurm.jobs()[jobs[0]] == slurm.jobs()[jobs[1]] == "RUNNING"
        assert asyncio.run(provider.exited(jobs[0])) is None
        client.drain_worker(ids["launch-slurm-1"])
        wait_for(lambda: slurm.jobs().get(jobs[0]) == "COMPLETED", 20.0, 0.2, "job 1 to end")
    asyncio.run(provider.stop(jobs[0]))  # already ended: a no-op
    asyncio.run(provider.stop(jobs[1]))
    wait_for(lambda: slurm.jobs().get(jobs[1]) == "CANCELLED", 20.0, 0.2, "job 2 cancelled")
    assert asyncio.run(provider.exited(jobs[0])) == f"Slurm job {jobs[0]} ended: COMPLETED"
    assert asyncio.run(provider.exited(jobs[1])) == f"Slurm job {jobs[1]} ended: CANCELLED"
    # a job that dies before its worker joins is seen in squeue's answer
    broken = SlurmProvider(
        parse_scale(
            f"slurm:conf={slurm.conf},python=/nonexistent", {"slurm": SlurmProvider.OPTIONS}
        ),
        tmp_path / "state",
    )
    dead = asyncio.run(broken.launch(Start("launch-slurm-3", f.url, f.token, None, 1, {})))
    why = wait_for(lambda: asyncio.run(broken.exited(dead)), 20.0, 0.2, "the broken job to end")
    assert why == f"Slurm job {dead} ended: FAILED"
    script = (tmp_path / "state" / "launch-slurm-1.sh").read_text()
    assert "--cpus-per-task=2" in script and "--mem=100M" in script and f.token not in script


@pytest.mark.timeout(90)
def test_a_job_makes_the_coordinator_submit_worker_jobs_to_slurm_and_cancel_them_when_idle(
    slurm: Slurm, farm: Callable[..., Farm]
) -> None:
    """`corral server --scale slurm:...`: one worker per Slurm job, at most max of them; they
    join, run every task, and once idle they are drained and their jobs end."""
    scale = f"slurm:conf={slurm.conf},python={PYTHON},max=2,slots=1,idle_timeout=3,startup=5"
    f = farm(server_args=("--scale", scale))
    with f.client() as client:
        job = client.submit_job([TaskSpec(argv=["sleep", "1"]) for _ in range(6)], name="hpc")

        def both_joined() -> list[LaunchInfo] | None:
            launches = [x for x in client.scale().launches if x.state == "joined"]
            return launches if len(launches) == 2 else None

        launches = wait_for(both_joined, 40.0, 0.2, "two Slurm workers to join")
        jobs = {x.handle for x in launches}
        assert len(jobs) == 2 and all(slurm.jobs()[str(j)] == "RUNNING" for j in jobs)
        assert f.wait_job(client, job.id, 40.0).status == "succeeded"
        assert {t.worker_id for t in client.tasks(job.id)} <= {x.worker_id for x in launches}

        def all_stopped() -> bool:
            return all(x.state == "stopped" for x in client.scale().launches)

        wait_for(all_stopped, 30.0, 0.2, "the idle workers to be drained and stopped")
        assert len(client.scale().launches) == 2  # never more than max
    ended = ("COMPLETED", "CANCELLED")
    wait_for(lambda: all(slurm.jobs().get(str(j)) in ended for j in jobs), 20.0, 0.2, "jobs end")
