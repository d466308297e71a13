"""The executable allowlist with real workers: refused until the program's hash is allowed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from corral.client import Client, sha256_file
from corral.protocol import Task, TaskSpec

from .conftest import PYTHON, Farm

pytestmark = pytest.mark.timeout(90)

PYTHON_FILE = Path(PYTHON).resolve()
PYTHON_SHA = sha256_file(PYTHON_FILE)


def run_one(f: Farm, client: Client, argv: list[str], **kw: object) -> Task:
    job = client.submit_job([TaskSpec(argv=argv, **kw)])  # type: ignore[arg-type]
    f.wait_job(client, job.id, 30)
    (task,) = client.tasks(job.id)
    return task


def test_unlisted_program_is_refused_until_corral_allow_add(farm: Callable[..., Farm]) -> None:
    f = farm()
    f.start_worker(slots=2, args=("--enforce-allowlist",))
    client = f.client()
    (info,) = client.workers()
    assert info.capabilities["allowlist"] == "list"

    refused = run_one(f, client, [PYTHON, "-c", "print('ran')"])
    assert (refused.status, refused.exit_code) == ("failed", None)
    assert refused.error == f"not_allowed: {PYTHON_FILE} sha256:{PYTHON_SHA}"
    assert refused.stdout is None  # it never started

    rc, out, err = f.cli("allow", "add", PYTHON, "--note", "python for tests")
    assert (rc, out.strip()) == (0, f"sha256:{PYTHON_SHA}"), err
    # allowed for scripts on the list only: -c code needs --allow-inline
    inline = run_one(f, client, [PYTHON, "-c", "print('ran')"])
    assert inline.error == (
        f"not_allowed: inline code (-c) for {PYTHON_FILE}:"
        " its allowlist entry does not say --allow-inline"
    )
    rc, out, err = f.cli("allow", "add", "--allow-inline", PYTHON)
    assert (rc, out.strip()) == (0, f"sha256:{PYTHON_SHA} (inline code allowed)"), err
    rc, out, _ = f.cli("allow", "list", "--json")
    assert PYTHON_SHA in out and "python for tests" in out and '"allow_inline": true' in out

    allowed = run_one(f, client, [PYTHON, "-c", "print('ran')"])
    assert (allowed.status, allowed.error) == ("succeeded", None)
    assert client.read_blob(allowed.stdout or "") == b"ran\n"
    # a shell task runs /bin/sh, which is not on the list
    shell = run_one(f, client, ["echo hi"], shell=True)
    assert shell.error is not None and shell.error.startswith("not_allowed: ")

    rc, _, err = f.cli("allow", "remove", f"sha256:{PYTHON_SHA}")
    assert rc == 0, err
    assert f.cli("allow", "remove", f"sha256:{PYTHON_SHA}")[0] == 2  # not there any more
    again = run_one(f, client, [PYTHON, "-c", "print('ran')"])  # the removal counts at once
    assert again.error == f"not_allowed: {PYTHON_FILE} sha256:{PYTHON_SHA}"


def test_worker_allow_flag_and_file(farm: Callable[..., Farm], tmp_path: Path) -> None:
    f = farm()
    sh_sha = sha256_file(Path("/bin/sh").resolve())
    true_file = Path("/usr/bin/true").resolve()
    true_sha = sha256_file(true_file)
    listing = tmp_path / "allowed.txt"
    listing.write_text(f"# the shell, for shell tasks\ninline sha256:{sh_sha}  sh\n")
    allow_py = ("--allow-inline", f"sha256:{PYTHON_SHA}")
    f.start_worker(args=("--label", "w=1", *allow_py, "--allow-file", str(listing)))
    client = f.client()
    assert run_one(f, client, [PYTHON, "-c", "pass"]).status == "succeeded"
    assert run_one(f, client, ["echo hi"], shell=True).status == "succeeded"
    refused = run_one(f, client, ["true"], requires={"label.w": "1"})
    assert refused.error == f"not_allowed: {true_file} sha256:{true_sha}"
    # the same program on a worker that allows its hash
    f.start_worker(args=("--label", "w=2", "--allow", f"sha256:{true_sha}"))
    allowed = run_one(f, client, ["true"], requires={"label.w": "2"})
    assert (allowed.status, allowed.error) == ("succeeded", None)


def test_bad_allow_options_fail_in_one_line(farm: Callable[..., Farm], tmp_path: Path) -> None:
    f = farm()
    env = {**f.env, "CORRAL_TOKEN": f.token}
    from .conftest import run_cli

    rc, _, err = run_cli(["worker", "--server", f.url, "--allow", "sha256:nothex"], env, tmp_path)
    assert rc == 2 and err.count("\n") == 1 and "--allow" in err
    rc, _, err = run_cli(
        ["worker", "--server", f.url, "--allow-all", "--enforce-allowlist"], env, tmp_path
    )
    assert rc == 2 and "contradicts" in err
    rc, _, err = f.cli("allow", "add", str(tmp_path / "missing"))
    assert rc == 2 and "is not a file" in err
