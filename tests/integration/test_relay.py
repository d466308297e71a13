"""Forking tasks in a sandbox without network (issue 15): the README's `fib` example, copied
from README.md, runs on `corral up` under bubblewrap; a shell task forks with `corral submit
--job`; through its relay a task may make only the requests a job token may."""

from __future__ import annotations

import re
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.protocol import TaskSpec

from .conftest import PYTHON, Farm, up_url

pytestmark = pytest.mark.usefixtures("needs_bwrap")
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_fib() -> str:
    """The `def fib` of the README's Python example, as written there."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if "def fib(" in b]
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("def fib("))
    body = [lines[start]]
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        body.append(line)
    return "\n".join(body) + "\n"


def start_up(tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[bytes]]) -> str:
    """`corral up` with its defaults (sandboxed, no network), as a user starts it; its URL."""
    log = tmp_path / "up.log"
    argv = [PYTHON, "-m", "corral", "up", "--workers", "1", "--slots", "2", "--port", "0"]
    argv += ["--data", str(tmp_path / "data")]
    with log.open("wb") as out:
        up = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    procs.append(up)
    return up_url(up, log)


@pytest.mark.timeout(60)
def test_readme_fib_runs_verbatim_on_corral_up(
    tmp_path: Path, isolated: dict[str, str], procs: list[subprocess.Popen[bytes]]
) -> None:
    start_up(tmp_path, isolated, procs)
    fib = readme_fib()
    assert "corral.current()" in fib  # the example still forks
    script = tmp_path / "fib.py"
    script.write_text(
        "import corral\n\nclient = corral.Client()\n\n"
        + fib
        + "\nw = [w for w in client.workers() if w.status == 'online']\n"
        "print('sandbox', w[0].capabilities['sandbox'], w[0].capabilities['network'])\n"
        "print('fib', client.submit(fib, 6).result(timeout=45))\n"
    )
    done = subprocess.run(
        [PYTHON, str(script)], env=isolated, capture_output=True, text=True, timeout=55
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["sandbox bwrap no", "fib 8"]


@pytest.mark.timeout(60)
def test_shell_task_forks_with_submit_job_and_a_relay_refuses_the_rest(
    farm: Callable[..., Farm],
) -> None:
    f = farm(workers=1, slots=2)
    client = f.client()
    (info,) = client.workers()
    assert (info.capabilities["sandbox"], info.capabilities["network"]) == ("bwrap", "no")
    shell = f'{PYTHON} -m corral submit --job "$CORRAL_JOB_ID" --wait -- echo child-ran'
    probe = textwrap.dedent(
        """
        import os, httpx
        url = os.environ["CORRAL_URL"]
        assert url.startswith("unix://"), url
        from corral._unix import UnixAddress
        t = httpx.HTTPTransport(uds=UnixAddress(url[len("unix://"):]).short)
        with httpx.Client(transport=t, base_url="http://x/api/v1") as h:
            print("workers", h.get("/workers").status_code)
            print("job", h.get("/jobs/" + os.environ["CORRAL_JOB_ID"]).status_code)
            print("tokens", h.get("/tokens", headers={"authorization": "Bearer x"}).status_code)
        """
    )
    job = client.submit_job(
        [
            TaskSpec(argv=[shell], shell=True, name="parent", max_attempts=1),
            TaskSpec(argv=[PYTHON, "-c", probe], name="probe", max_attempts=1),
        ]
    )
    f.wait_job(client, job.id, 45)
    tasks = {t.name or t.id: t for t in client.tasks(job.id)}
    parent, probed = tasks["parent"], tasks["probe"]
    assert parent.status == "succeeded", client.read_blob(parent.stderr or "").decode()
    child_id, status = client.read_blob(parent.stdout or "").decode().split()
    assert status == "succeeded"
    assert client.read_blob(client.task(child_id).stdout or "").decode() == "child-ran\n"
    assert probed.status == "succeeded", client.read_blob(probed.stderr or "").decode()
    out = client.read_blob(probed.stdout or "").decode().split("\n")
    assert out[:3] == ["workers 403", "job 200", "tokens 403"]


@pytest.mark.timeout(60)
def test_children_inherit_the_network_of_their_parent(farm: Callable[..., Farm]) -> None:
    f = farm(workers=1, slots=2, args=("--allow-network",))
    client = f.client()
    fork = f'{PYTHON} -m corral submit --job "$CORRAL_JOB_ID" --wait -- echo $CORRAL_URL'
    job = client.submit_job(
        [TaskSpec(argv=[fork], shell=True, requires={"network": "yes"}, max_attempts=1)]
    )
    f.wait_job(client, job.id, 45)
    parent, child = sorted(client.tasks(job.id), key=lambda t: t.seq)
    assert parent.status == "succeeded", client.read_blob(parent.stderr or "").decode()
    assert child.requires == {"network": "yes"}
    # with the network, the child talks to the coordinator itself: no relay
    assert client.read_blob(child.stdout or "").decode().strip() == f.url


def test_the_readme_example_is_found() -> None:
    code = readme_fib()
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # it is valid Python on its own
    assert callable(namespace["fib"])
