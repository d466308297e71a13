"""Issue 16's autoscaling over real processes: a `corral server --scale` starts real
`corral worker` processes (the `local` provider, or the user's scripts with `command`),
drains them when idle, and cleans up after launches that fail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from corral.client import Client
from corral.coordinator.providers import Start, build_provider
from corral.protocol import ScaleStatus, TaskSpec

from .conftest import Farm, descendants, free_port, is_gone, run_cli, up_url, wait_for

N = 40


def sh(script: str, **kw: object) -> TaskSpec:
    return TaskSpec(argv=["sh", "-c", script], **kw)  # type: ignore[arg-type]


def live_workers(f: Farm) -> list[str]:
    return [w.name for w in f.client().workers() if w.status not in ("gone", "lost")]


def worker_processes(f: Farm) -> list[int]:
    assert f.server is not None
    return [p.pid for p in descendants(f.server.pid) if "worker" in " ".join(p.cmdline())]


@pytest.mark.timeout(120)
def test_local_provider_grows_for_40_tasks_and_shrinks_back_to_zero(
    farm: Callable[..., Farm],
) -> None:
    f = farm(server_args=("--scale", "local:min=0,max=4,idle_timeout=5s"))
    client = f.client()
    assert live_workers(f) == []
    began = time.monotonic()
    job = client.submit_job([sh(f"sleep 0.5; echo {i}") for i in range(N)])
    first = wait_for(lambda: live_workers(f), 30, 0.1, "a first worker to join")
    joined = time.monotonic() - began
    done = f.wait_job(client, job.id, timeout=90)
    finished = time.monotonic() - began
    assert done.status == "succeeded"

    # none lost, none killed or requeued by a scale-down: one attempt each, and each task
    # was leased once and succeeded (submission writes no event: running is the first)
    tasks = client.tasks(job.id)
    assert len(tasks) == N
    assert {(t.status, t.attempts) for t in tasks} == {("succeeded", 1)}
    history: dict[str, list[str]] = {}
    for event in client.events(job.id):
        history.setdefault(event.task_id, []).append(event.status)
    assert {tuple(h) for h in history.values()} == {("running", "succeeded")}
    ran_on = {t.worker_id for t in tasks}
    names = {w.id: w.name for w in client.workers()}
    assert all(names[w].startswith("local-") for w in ran_on if w)
    assert 1 <= len(ran_on) <= 4 and first[0].startswith("local-")

    # back to zero workers, and no worker process left, within idle_timeout and a drain
    wait_for(lambda: live_workers(f) == [], 40, 0.2, "the farm to shrink to 0 workers")
    shrunk = time.monotonic() - began
    wait_for(lambda: worker_processes(f) == [], 15, 0.2, "the worker processes to exit")

    def scale() -> Any:
        rc, out, err = f.cli("scale", "--json")
        assert rc == 0, err
        return json.loads(out)

    # the autoscaler records its stops at its next round (every second) after the workers left
    status = wait_for(
        lambda: (s := scale())["providers"][0]["running"] == 0 and s, 10, 0.2, "0 running"
    )
    (local,) = status["providers"]
    assert (local["running"], local["launching"], local["failed"]) == (0, 0, 0)
    assert 1 <= local["launched"] <= 4
    assert {x["state"] for x in status["launches"]} == {"stopped"}
    metrics = httpx.get(f.url + "/metrics", headers={"authorization": f"Bearer {f.token}"})
    assert f'corral_autoscaler_launches_total{{provider="local"}} {local["launched"]}.0' in (
        metrics.text
    )
    print(
        f"\nlocal provider: first worker joined after {joined:.1f} s, {N} tasks done after "
        f"{finished:.1f} s on {len(ran_on)} workers, back to 0 after {shrunk:.1f} s"
    )


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@contextlib.contextmanager
def reaped(f: Farm, pids: Path) -> Iterator[None]:
    """Whatever happens, the processes whose pids a script wrote to `pids` are gone at the
    end: started in the background, they are no descendants of the coordinator."""
    try:
        yield
    finally:
        if pids.exists():
            f.adopt(*(int(p) for p in pids.read_text().split()))


def scripts(root: Path) -> tuple[str, str, Path]:
    """A start script that records what it was asked and starts a real `corral worker` in
    the background (its pid the handle), and a stop script that records and kills it."""
    root.mkdir(parents=True, exist_ok=True)
    calls = root / "calls"
    start = script(
        root / "start",
        f'echo "start $*" >> {calls}\n'
        f'echo "env $CORRAL_LAUNCH_ID $CORRAL_SLOTS $CORRAL_LABELS $CORRAL_URL'
        f' token=${{CORRAL_TOKEN:+set}}" >> {calls}\n'
        f"nohup {sys.executable} -m corral worker $CORRAL_WORKER_ARGS"
        f' --work-dir {root}/"$CORRAL_LAUNCH_ID" > {root}/"$CORRAL_LAUNCH_ID".log 2>&1'
        " < /dev/null &\n"
        f'echo $! >> {root}/pids\necho "starting a worker"\necho "pid-$!"\n',
    )
    stop = script(root / "stop", f'echo "stop $*" >> {calls}\nkill "${{1#pid-}}" 2>/dev/null\n')
    return start, stop, calls


@pytest.mark.timeout(120)
def test_command_provider_runs_the_users_scripts(farm: Callable[..., Farm], tmp_path: Path) -> None:
    start, stop, calls = scripts(tmp_path / "cmd")
    spec = f"command:start={start},stop={stop},max=2,slots=2,labels=site=lab,idle_timeout=2s"
    f = farm(server_args=("--scale", spec))
    with reaped(f, tmp_path / "cmd" / "pids"):
        command_workers_run_and_leave(f, calls)


def command_workers_run_and_leave(f: Farm, calls: Path) -> None:
    client = f.client()
    job = client.submit_job([sh("sleep 0.2", requires={"label.site": "lab"})] * 4)
    assert f.wait_job(client, job.id, timeout=60).status == "succeeded"
    wait_for(lambda: live_workers(f) == [], 40, 0.2, "the command workers to be drained")
    wait_for(lambda: "stop " in calls.read_text(), 15, 0.2, "the stop script")

    status = client.scale()
    launches = [x for x in status.launches if x.state == "stopped"]
    assert launches and len(launches) <= 2
    lines = calls.read_text().splitlines()
    for x in launches:
        assert x.handle is not None and x.handle.startswith("pid-")
        assert f"start {x.id} 2 site=lab" in lines  # no secret on its command line
        assert f"env {x.id} 2 site=lab {f.url} token=set" in lines
        wait_for(lambda h=x.handle: f"stop {h}" in calls.read_text(), 15, 0.2, "stop HANDLE")
        assert is_gone(int(x.handle.removeprefix("pid-")))
    tokens = {t.name: t for t in client.tokens()}
    assert all(tokens[f"launch {x.id}"].revoked is not None for x in launches)
    rc, out, err = f.cli("scale")
    assert rc == 0, err
    assert "command" in out.splitlines()[1] and "2 slots; site=lab" in out
    assert "stopped" in out and "last decision" in out


@pytest.mark.timeout(120)
def test_failing_start_scripts_and_workers_that_never_join_count_as_failed(
    farm: Callable[..., Farm], tmp_path: Path
) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    calls = root / "calls"
    broken = script(root / "broken", 'echo "quota exceeded in zone b" >&2\nexit 3\n')
    sleeper = script(root / "sleeper", f"sleep 600 > /dev/null 2>&1 &\necho $! | tee {root}/pid\n")
    stop = script(root / "stop", f'echo "stop $*" >> {calls}\nkill "$1"\n')
    f = farm(
        server_args=(
            "--scale",
            f"command:name=broken,start={broken},max=1",
            "--scale",
            f"command:name=silent,start={sleeper},stop={stop},max=1,join_timeout=3s",
        )
    )
    with reaped(f, root / "pid"):
        failed_launches_are_cleaned_up(f, root)


def failed_launches_are_cleaned_up(f: Farm, root: Path) -> None:
    calls = root / "calls"
    client = f.client()
    client.submit_job([sh("true")])

    def failures() -> dict[str, int]:
        return {p.name: p.failed for p in client.scale().providers}

    wait_for(lambda: min(failures().values()) >= 1, 40, 0.2, "a failure of each provider")
    status: ScaleStatus = client.scale()
    errors = {x.provider: x.error for x in status.launches if x.state == "failed"}
    assert errors["command:broken"] == "the start script exited with 3: quota exceeded in zone b"
    assert errors["command:silent"] == "did not join within 3 s"

    # the silent one is cleaned up: its stop script got the handle, and its process is gone
    pid = (root / "pid").read_text().strip()
    wait_for(lambda: f"stop {pid}" in calls.read_text(), 15, 0.2, "the stop script")
    wait_for(lambda: is_gone(int(pid)), 10, 0.1, "the never-joining process to be killed")
    failed = [x for x in status.launches if x.state == "failed"]
    tokens = {t.name: t for t in client.tokens()}
    assert all(tokens[f"launch {x.id}"].revoked is not None for x in failed)
    assert any("failed launch" in r and "trying again" in r for r in status.reasons)
    metrics = httpx.get(f.url + "/metrics", headers={"authorization": f"Bearer {f.token}"})
    assert 'corral_autoscaler_launch_failures_total{provider="command:broken"}' in metrics.text


@pytest.mark.timeout(60)
def test_bad_scale_values_and_non_admin_tokens_are_refused(
    farm: Callable[..., Farm], tmp_path: Path, isolated: dict[str, str]
) -> None:
    data = tmp_path / "never"
    for value, says in [
        ("local:max=x", "--scale local: max='x': not a whole number"),
        ("local:min=0,max=4,idle=5s", "--scale local: unknown option 'idle'"),
        ("cloud:max=1", "unknown provider 'cloud'"),
        (f"command:start={tmp_path}/missing", "is not an executable file"),
        ("local:max=1,local:max=2", "give each provider its own --scale"),
    ]:
        port = str(free_port())
        argv = ["server", "--data", str(data), "--port", port, "--scale", value]
        rc, out, err = run_cli(argv, isolated, tmp_path, timeout=20)
        assert rc != 0 and out == ""
        assert len(err.strip().splitlines()) == 1 and says in err, err
    env = {**isolated, "CORRAL_SCALE": "local:max=1 local:max=x"}
    argv = ["server", "--data", str(data), "--port", str(free_port())]
    rc, _, err = run_cli(argv, env, tmp_path, timeout=20)
    assert rc != 0 and "max='x': not a whole number" in err
    assert not data.exists()  # nothing half-made
    both = ("--scale", "local:max=1", "--scale", "local:max=2")
    argv = ["server", "--data", str(data), "--port", str(free_port()), *both]
    rc, _, err = run_cli(argv, isolated, tmp_path, timeout=20)
    assert rc != 0 and "two providers are called local; give one name=" in err

    f = farm()
    secret = f.client().create_token("bob", "submit").secret
    r = httpx.get(f.url + "/api/v1/scale", headers={"authorization": f"Bearer {secret}"})
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden" and "scale_status" in r.json()["detail"]
    assert f.client().scale().reasons == [
        "no provider configured: start the coordinator with --scale KIND:OPTIONS"
    ]
    rc, out, err = f.cli("scale")
    assert rc == 0 and "--scale KIND:OPTIONS" in out


@pytest.mark.timeout(90)
def test_up_with_scale_starts_local_workers_and_stops_them_when_it_stops(
    tmp_path: Path, isolated: dict[str, str], procs: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "up.log"
    argv = [sys.executable, "-m", "corral", "up", "--workers", "0", "--port", "0"]
    argv += ["--data", str(tmp_path / "data"), "--scale", "local:max=2,idle_timeout=5m"]
    with log.open("wb") as out:
        up = subprocess.Popen(
            argv, env=isolated, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    procs.append(up)
    url = up_url(up, log)
    with Client() as client:  # the config `up` wrote
        assert client.url == url
        job = client.submit_job([sh("sleep 1")] * 3)
        wait_for(lambda: client.job(job.id).status == "succeeded", 40, 0.2, "the job")
        names = {w.name for w in client.workers() if w.status == "online"}
    assert len(names) == 2 and all(n.startswith("local-") for n in names)
    workers = [p for p in psutil.Process(up.pid).children() if "worker" in p.cmdline()]
    assert len(workers) == 2
    up.send_signal(signal.SIGTERM)  # idle workers it started go with it
    assert up.wait(30) == 0, log.read_text()
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert alive == [], f"workers left behind: {alive}"


@pytest.mark.timeout(60)
def test_local_provider_sees_a_worker_die_before_joining(tmp_path: Path) -> None:
    """The provider on its own: a launched worker process killed before it joined is
    reported by `exited` (the autoscaler then gives the launch up at once), and `stop`
    reaps it, removing its work directory but keeping its log."""
    provider = build_provider("local:sandbox=off", tmp_path)
    # nobody listens there: the worker keeps trying to register, and never joins
    start = Start("local-0badc0de", f"http://127.0.0.1:{free_port()}", "crl_x", None, 1, {})

    async def body() -> None:
        handle = await provider.launch(start)
        assert await provider.exited(handle) is None
        os.kill(int(handle), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (why := await provider.exited(handle)) is None:
            assert time.monotonic() < deadline, "exited() never noticed"
            await asyncio.sleep(0.05)
        assert why == f"worker process {handle} exited with code -9 before joining"
        await provider.stop(handle)
        assert is_gone(int(handle))
        await provider.close()

    asyncio.run(asyncio.wait_for(body(), 30))
    state = tmp_path / "scale" / "local"
    assert not (state / start.launch_id).exists()
    assert (state / f"{start.launch_id}.log").exists()
