"""The ssh, slurm and libcloud providers' pure parts: options, scripts, handles, answers.

The scripts are also run here where that needs no server: the ssh start script by a real
`sh` (it must start the process in the background, print its pid and keep the secret off
every command line), the user-data by `sh -n`. Against real servers: tests/integration/
test_scale_ssh.py, test_scale_slurm.py; libcloud's dummy driver is exercised in-process below.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from libcloud.compute.types import NodeState

from corral.coordinator.providers import (
    ProviderError,
    ScaleError,
    Start,
    build_provider,
    parse_scale,
)
from corral.coordinator.providers.libcloud import (
    LibcloudProvider,
    node_name,
    read_secret,
    user_data,
    userdata_args,
)
from corral.coordinator.providers.slurm import batch_script, job_ended, parse_sbatch
from corral.coordinator.providers.ssh import (
    Remote,
    SshProvider,
    exited_script,
    parse_hosts,
    pick_host,
    start_script,
    stop_script,
)

START = Start("l-42", "http://10.0.0.1:8470", "crw_secret", None, 2, {"gpu": "yes"})
JOINING = Start("l-43", "https://c:8470", "crw_x", "corral1:abc", 1, {})


# ssh


def test_hosts_are_a_list_continued_after_commas() -> None:
    spec = parse_scale(
        "ssh:hosts=h1,h2:2222,[::1]:22,user=me,max=3", {"ssh": frozenset({"hosts", "user"})}
    )
    assert spec.options.extra == {"hosts": "h1,h2:2222,[::1]:22", "user": "me"}
    assert spec.options.max == 3
    assert parse_hosts(spec.options.extra["hosts"]) == [("h1", None), ("h2", 2222), ("::1", 22)]


@pytest.mark.parametrize(
    ("text", "error"),
    [("", "give hosts="), ("h:x", "the port is not a number"), (":22", "has no name")],
)
def test_bad_hosts_are_one_line_errors(text: str, error: str) -> None:
    with pytest.raises(ScaleError, match=error):
        parse_hosts(text)


@given(
    st.lists(st.sampled_from("abcd"), min_size=1, unique=True),
    st.dictionaries(st.sampled_from("abcd"), st.integers(0, 5)),
)
def test_the_next_launch_goes_to_a_least_busy_host(
    hosts: list[str], running: dict[str, int]
) -> None:
    chosen = pick_host(hosts, running)
    assert all(running.get(chosen, 0) <= running.get(h, 0) for h in hosts)


def test_a_handle_says_where_the_worker_runs() -> None:
    remote = Remote("10.0.0.5", 2222, 4321, "l-42")
    assert remote.handle() == "4321@10.0.0.5:2222/l-42"
    assert Remote.parse(remote.handle()) == remote
    assert Remote.parse("7@h/l") == Remote("h", None, 7, "l")


def test_the_start_script_runs_the_worker_in_the_background_with_the_secret_off_argv(
    tmp_path: Path,
) -> None:
    """A real sh runs the script with a fake `python` that records its argv and env."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "$@" > args\necho "$CORRAL_TOKEN" > token\nsleep 30\n')
    fake.chmod(0o755)
    script, stdin = start_script(START, str(fake), str(tmp_path / "w"))
    assert "crw_secret" not in script and stdin == "crw_secret\n"
    done = subprocess.run(
        ["sh", "-c", script], input=stdin, capture_output=True, text=True, cwd=tmp_path, timeout=10
    )
    pid = int(done.stdout.strip())
    try:
        for _ in range(100):
            if (tmp_path / "token").exists() and (tmp_path / "args").exists():
                break
            time.sleep(0.05)
        assert (tmp_path / "token").read_text().strip() == "crw_secret"
        args = (tmp_path / "args").read_text().split()
        assert args[:3] == ["-m", "corral", "worker"]
        assert "--name" in args and "l-42" in args and "--work-dir" in args
        assert f"{tmp_path}/w/l-42" in args
    finally:
        os.kill(pid, 9)


def test_a_joining_worker_gets_its_join_string_on_stdin() -> None:
    script, stdin = start_script(JOINING, "python3", ".corral/workers")
    assert "read -r CORRAL_JOIN" in script and stdin == "corral1:abc\n"
    assert "corral1:abc" not in script


def test_stop_only_signals_a_pid_that_is_still_the_launch(tmp_path: Path) -> None:
    """A pid whose command line does not name the launch (reused) is never killed."""
    other = subprocess.Popen(["sleep", "30"])
    try:
        script = stop_script(Remote("h", None, other.pid, "l-42"), str(tmp_path))
        subprocess.run(["sh", "-c", script.replace("-lt 25", "-lt 1")], check=True, timeout=30)
        assert other.poll() is None
        out = subprocess.run(
            ["sh", "-c", exited_script(Remote("h", None, other.pid, "l-42"), str(tmp_path))],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        assert out.strip() != "running"
    finally:
        other.kill()
        other.wait()


def test_stop_kills_the_launch_that_did_not_leave(tmp_path: Path) -> None:
    worker = subprocess.Popen(["sh", "-c", "sleep 30; : l-42"])
    (tmp_path / "l-42").mkdir()
    try:
        remote = Remote("h", None, worker.pid, "l-42")
        out = subprocess.run(
            ["sh", "-c", exited_script(remote, str(tmp_path))],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        assert out.strip() == "running"
        subprocess.run(
            ["sh", "-c", stop_script(remote, str(tmp_path)).replace("-lt 25", "-lt 1")],
            check=True,
            timeout=30,
        )
        assert worker.wait(5) == -15
        assert not (tmp_path / "l-42").exists()
    finally:
        worker.kill()
        worker.wait()


def test_ssh_options_are_checked() -> None:
    with pytest.raises(ScaleError, match="give hosts="):
        build_provider("ssh:user=me", Path("/nonexistent"))
    with pytest.raises(ScaleError, match="connect_timeout"):
        build_provider("ssh:hosts=h,connect_timeout=soon", Path("/nonexistent"))


# slurm


def test_the_batch_script_asks_for_the_slots_and_memory_and_holds_no_secret() -> None:
    script = batch_script(
        START,
        "/venv/bin/python",
        "/logs/l-42.log",
        8 * 2**30,
        {"partition": "short", "time": "1:00:00"},
    )
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "#SBATCH --cpus-per-task=2" in lines and "#SBATCH --mem=8192M" in lines
    assert "#SBATCH --partition=short" in lines and "#SBATCH --time=1:00:00" in lines
    assert "#SBATCH --job-name=corral-l-42" in lines and "#SBATCH --output=/logs/l-42.log" in lines
    assert lines[-1].startswith(
        "exec /venv/bin/python -m corral worker --server http://10.0.0.1:8470 --name l-42"
    )
    assert "crw_secret" not in script
    assert subprocess.run(["sh", "-n"], input=script, text=True, timeout=10).returncode == 0


def test_sbatch_output_and_squeue_states() -> None:
    assert parse_sbatch("17\n") == "17" and parse_sbatch("18;cluster\n") == "18"
    with pytest.raises(Exception, match="no job id"):
        parse_sbatch("sbatch: error: Batch job submission failed")
    assert job_ended("5", "RUNNING\n", 0, "") is None
    assert job_ended("5", "PENDING\n", 0, "") is None
    assert job_ended("5", "FAILED\n", 0, "") == "Slurm job 5 ended: FAILED"
    assert job_ended("5", "", 0, "") == "Slurm job 5 is no longer known to Slurm"
    assert job_ended("5", "", 1, "slurm_load_jobs error: Invalid job id specified") == (
        "Slurm job 5 is no longer known to Slurm"
    )
    assert job_ended("5", "", 1, "Unable to contact slurm controller") is None


def test_slurm_options_are_checked() -> None:
    with pytest.raises(ScaleError, match="unknown option 'nodes'"):
        build_provider("slurm:nodes=2", Path("/nonexistent"))


# libcloud


def test_the_user_data_installs_corral_and_joins_with_the_launch_token() -> None:
    text = user_data(START, package="corral==0.1.0")
    assert text.startswith("#!/bin/sh\n")
    assert "/opt/corral/bin/pip install --quiet corral==0.1.0" in text
    worker = "exec /opt/corral/bin/corral worker --server http://10.0.0.1:8470 --name l-42"
    assert f"CORRAL_TOKEN=crw_secret {worker} --slots 2 --label gpu=yes" in text
    assert subprocess.run(["sh", "-n"], input=text, text=True, timeout=10).returncode == 0
    joining = user_data(JOINING)
    assert "CORRAL_JOIN=corral1:abc exec" in joining and "crw_x" not in joining


def test_user_data_goes_where_each_real_driver_takes_it() -> None:
    from libcloud.compute.drivers.digitalocean import DigitalOcean_v2_NodeDriver
    from libcloud.compute.drivers.openstack import OpenStack_1_1_NodeDriver
    from libcloud.compute.providers import get_driver

    def keywords(name: str) -> list[str]:
        return list(inspect.signature(get_driver(name).create_node).parameters)

    assert userdata_args(keywords("ec2"), "ec2", "S") == {"ex_userdata": "S"}
    # get_driver("openstack") and ("digitalocean") are factories of an API version's driver:
    # the ones made by default
    openstack = list(inspect.signature(OpenStack_1_1_NodeDriver.create_node).parameters)
    assert userdata_args(openstack, "openstack", "S") == {"ex_userdata": "S"}
    ocean = list(inspect.signature(DigitalOcean_v2_NodeDriver.create_node).parameters)
    assert userdata_args(ocean, "digitalocean", "S") == {"ex_user_data": "S"}
    assert userdata_args(keywords("azure_arm"), "azure_arm", "S") == {"ex_customdata": "S"}
    assert userdata_args(keywords("gce"), "gce", "S") == {"ex_metadata": {"startup-script": "S"}}
    assert userdata_args(keywords("dummy"), "dummy", "S") is None


def test_node_names_and_secrets(tmp_path: Path) -> None:
    assert node_name("L_42.x") == "corral-l-42-x" and len(node_name("a" * 100)) == 63
    (tmp_path / "secret").write_text("s3cr3t\n")
    assert read_secret(f"@{tmp_path / 'secret'}") == "s3cr3t" and read_secret("plain") == "plain"
    with pytest.raises(ScaleError, match="cannot read"):
        read_secret(f"@{tmp_path / 'missing'}")


def test_libcloud_options_are_checked() -> None:
    with pytest.raises(ScaleError, match="give driver="):
        build_provider("libcloud:image=x", Path("/nonexistent"))
    with pytest.raises(ScaleError, match="no driver 'nope'"):
        build_provider("libcloud:driver=nope", Path("/nonexistent"))
    with pytest.raises(ScaleError, match="give image="):
        build_provider("libcloud:driver=ec2,key=k,secret=s", Path("/nonexistent"))


@pytest.mark.timeout(30)
def test_the_dummy_driver_creates_a_node_per_launch_and_destroys_it_on_stop(tmp_path: Path) -> None:
    """libcloud's Dummy driver boots no VM and takes no user-data: this checks the provider's
    calls (create with the launch's name, image and size; destroy on stop; gone = exited)."""
    provider = build_provider("libcloud:driver=dummy,image=1,size=2,slots=2,max=3", tmp_path)
    assert isinstance(provider, LibcloudProvider)
    driver = provider.driver
    before = {n.id for n in driver.list_nodes()}

    async def scenario() -> tuple[str, str]:
        a = await provider.launch(START)
        b = await provider.launch(JOINING)
        return a, b

    a, b = asyncio.run(scenario())
    nodes = {str(n.id): n for n in driver.list_nodes()}
    assert {a, b} <= set(nodes) and a != b and {a, b}.isdisjoint(str(i) for i in before)
    assert asyncio.run(provider.exited(a)) is None
    asyncio.run(provider.stop(a))
    assert a not in {str(n.id) for n in driver.list_nodes()} and b in {
        str(n.id) for n in driver.list_nodes()
    }
    assert asyncio.run(provider.exited(a)) == f"node {a} is gone"
    asyncio.run(provider.stop(a))  # stopping twice is fine
    node = next(n for n in driver.list_nodes() if str(n.id) == b)
    node.state = NodeState.TERMINATED  # as a cloud reports a node that died (Dummy has no way)
    assert asyncio.run(provider.exited(b)) == f"node {b} is terminated"
    assert provider.policy.offer.slots == 2 and provider.policy.max == 3


def test_asyncssh_imports_without_warnings_escaping() -> None:
    """The provider silences asyncssh's DSA deprecation at import (pytest makes warnings
    errors, and the coordinator would print them)."""
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "from corral.coordinator.providers.ssh import _import_asyncssh; _import_asyncssh()"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


@pytest.mark.timeout(30)
def test_launches_started_together_go_to_different_hosts(tmp_path: Path) -> None:
    """Two closed loopback ports as hosts: two launches at once try one each (each failing
    with a line naming its host), and a failed launch does not count against its host."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
    provider = build_provider(f"ssh:hosts={hosts},known_hosts=off,connect_timeout=5", tmp_path)

    async def both() -> list[BaseException | str]:
        starts = [Start(f"l-{i}", "http://c", "t", None, 1, {}) for i in range(2)]
        return await asyncio.gather(*(provider.launch(s) for s in starts), return_exceptions=True)

    results = asyncio.run(both())
    assert all(isinstance(r, ProviderError) for r in results)
    errors = sorted(str(r) for r in results)
    assert all(e.startswith("ssh 127.0.0.1:") for e in errors)
    assert sorted(e.split(":")[1] for e in errors) == sorted(str(p) for p in ports)
    assert isinstance(provider, SshProvider) and provider.placed == {}
