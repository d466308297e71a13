"""The executable allowlist: parsing, the default mode, resolving argv[0], refusing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from corral.worker.allowlist import (
    AllowPolicy,
    Facts,
    HashCache,
    allow_mode,
    env_problem,
    is_loopback_url,
    parse_hash,
    read_allow_file,
    refusal,
    resolve_program,
    startup_problem,
)
from corral.worker.interpreters import what_runs

HEX = "ab" * 32


def test_parse_hash() -> None:
    assert parse_hash(f"sha256:{HEX.upper()}") == HEX
    assert parse_hash(HEX) == HEX
    for bad in ("sha256:abc", "md5:" + HEX, "zz" * 32):
        with pytest.raises(ValueError):
            parse_hash(bad)


def test_read_allow_file(tmp_path: Path) -> None:
    path = tmp_path / "allow.txt"
    path.write_text(f"# programs\nsha256:{HEX}  python 3.11\n\n{'cd' * 32} inline\n")
    assert read_allow_file(path) == ({HEX, "cd" * 32}, set())  # a note is never the mark
    path.write_text(f"inline sha256:{HEX}  sh, for shell tasks\n")
    assert read_allow_file(path) == ({HEX}, {HEX})
    path.write_text("sha256:nope\n")
    with pytest.raises(ValueError, match="allow.txt:1"):
        read_allow_file(path)


def test_loopback_urls() -> None:
    assert is_loopback_url("http://127.0.0.1:8470")
    assert is_loopback_url("http://localhost:1")
    assert is_loopback_url("https://[::1]:8470")
    assert not is_loopback_url("https://farm.example.org:8470")
    assert not is_loopback_url("http://10.0.0.5:8470")


def test_default_mode_is_all_on_loopback_and_list_over_the_network() -> None:
    assert allow_mode("http://127.0.0.1:1", False, False, set()) == "all"
    assert allow_mode("http://10.1.2.3:1", False, False, set()) == "list"
    assert allow_mode("http://10.1.2.3:1", True, False, set()) == "all"  # --allow-all
    assert allow_mode("http://127.0.0.1:1", False, True, set()) == "list"  # --enforce-allowlist
    assert allow_mode("http://127.0.0.1:1", False, False, {HEX}) == "list"  # --allow given


def test_resolve_program_in_the_task_dir_and_on_path(tmp_path: Path) -> None:
    bin_dir, work = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    work.mkdir()
    tool = bin_dir / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (work / "mine").write_text("#!/bin/sh\n")
    (work / "mine").chmod(0o755)
    os.symlink(tool, bin_dir / "alias")
    assert resolve_program("tool", work, str(bin_dir)) == tool
    assert resolve_program("alias", work, str(bin_dir)) == tool  # the file a symlink names
    assert resolve_program("./mine", work, str(bin_dir)) == work / "mine"
    assert resolve_program(str(tool), work, "") == tool
    assert resolve_program("nothing", work, str(bin_dir)) is None


def test_refusal_names_the_program_and_its_hash(tmp_path: Path) -> None:
    listed = AllowPolicy("list", own={HEX})
    assert refusal(listed, Facts("x", Path("/bin/x"), HEX)) is None
    assert (
        refusal(listed, Facts("y", Path("/bin/y"), "cd" * 32))
        == f"not_allowed: /bin/y sha256:{'cd' * 32}"
    )
    missing = Facts("zz", None, None)
    assert refusal(listed, missing) == "not_allowed: zz (not found, so it cannot be checked)"
    assert refusal(AllowPolicy("all"), missing) is None
    listed.remote = {"cd" * 32}  # the coordinator's list counts too
    assert refusal(listed, Facts("y", Path("/bin/y"), "cd" * 32)) is None


PY, SCRIPT, OTHER = "11" * 32, "22" * 32, "33" * 32
PYTHON = Path("/usr/bin/python3.11")


def python_facts(argv: list[str], script_sha: str | None = SCRIPT, env: str | None = None) -> Facts:
    runs = what_runs("python", argv[1:])
    script = Path("/srv/t", runs.script) if runs.script and script_sha else None
    return Facts(argv[0], PYTHON, PY, "python", runs, script, script_sha, env)


def test_an_allowed_interpreter_runs_only_allowed_scripts() -> None:
    policy = AllowPolicy("list", own={PY, SCRIPT})
    assert refusal(policy, python_facts(["python3", "job.py", "-c", "x"])) is None
    assert refusal(policy, python_facts(["python3", "-u", "evil.py"], OTHER)) == (
        f"not_allowed: script evil.py sha256:{OTHER}"
    )
    assert refusal(policy, python_facts(["python3", "gone.py"], None)) == (
        "not_allowed: script gone.py (not found, so it cannot be checked)"
    )
    policy.remote = {OTHER}  # a script on the coordinator's list
    assert refusal(policy, python_facts(["python3", "evil.py"], OTHER)) is None


def test_inline_code_needs_an_allow_inline_entry() -> None:
    policy = AllowPolicy("list", own={PY})
    for argv, why in [
        (["python3", "-c", "print(1)"], "-c"),
        (["python3", "-m", "http.server"], "-m"),
        (["python3"], "code on stdin (no script given)"),
    ]:
        assert refusal(policy, python_facts(argv)) == (
            f"not_allowed: inline code ({why}) for {PYTHON}:"
            " its allowlist entry does not say --allow-inline"
        )
    policy.own_inline = {PY}
    assert refusal(policy, python_facts(["python3", "-c", "print(1)"])) is None
    policy.own_inline, policy.remote_inline = set(), {PY}  # or the coordinator's entry says so
    assert refusal(policy, python_facts(["python3", "-c", "print(1)"])) is None


def test_code_in_the_environment_or_home_is_refused(tmp_path: Path) -> None:
    assert env_problem({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, tmp_path) is None
    for env in (
        {"LD_PRELOAD": "./x.so"},
        {"BASH_ENV": "./x.sh"},
        {"PYTHONPATH": "."},
        {"NODE_OPTIONS": "--require ./x"},
        {"BASH_FUNC_ls%%": "() { id; }"},
        {"PATH": f"{tmp_path}/bin:/usr/bin"},
        {"PATH": "bin:/usr/bin"},
        {"PATH": "/usr/bin:"},  # an empty entry is the current directory
    ):
        assert env_problem(env, tmp_path) is not None, env
    problem = env_problem({"LD_PRELOAD": "x"}, tmp_path)
    policy = AllowPolicy("list", own={PY, SCRIPT})
    assert refusal(policy, python_facts(["python3", "job.py"], env=problem)) == (
        f"not_allowed: environment: {problem}"
    )
    # any allowed program, not only interpreters
    assert refusal(policy, Facts("x", Path("/bin/x"), SCRIPT, env=problem)) is not None
    assert startup_problem("python", {".local", "job.py"}) is not None
    assert startup_problem("python", {"job.py"}) is None
    assert startup_problem("sh", {".local"}) is None


def test_hash_cache_rehashes_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "prog"
    path.write_bytes(b"one")
    cache = HashCache()
    assert cache.sha256(path) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"two!")
    assert cache.sha256(path) == hashlib.sha256(b"two!").hexdigest()


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_guard_checks_the_script_a_real_interpreter_is_given(tmp_path: Path) -> None:
    import sys

    from corral.worker.guard import Guard
    from corral.worker.sandbox import SandboxPolicy

    python = Path(sys.executable).resolve()
    work = tmp_path / "task"
    work.mkdir()
    (work / "job.py").write_text("print('job')\n")
    (work / "evil.py").write_text("print('evil')\n")
    copy = work / "tool"  # python under another name: still python, by its hash
    copy.write_bytes(python.read_bytes())
    copy.chmod(0o755)
    policy = AllowPolicy("list", own={sha_of(python), sha_of(work / "job.py")})
    guard = Guard(SandboxPolicy(None), policy)
    env = {"PATH": f"{python.parent}:/usr/bin:/bin", "HOME": str(work)}
    assert guard.refuse([str(python), "job.py"], work, env) is None
    assert guard.refuse([str(python), "evil.py"], work, env) == (
        f"not_allowed: script evil.py sha256:{sha_of(work / 'evil.py')}"
    )
    assert guard.refuse([str(python), "-c", "1"], work, env) == (
        f"not_allowed: inline code (-c) for {python}: its allowlist entry does not say"
        " --allow-inline"
    )
    assert (guard.refuse(["./tool", "-c", "1"], work, env) or "").startswith("not_allowed: inline")
    assert (guard.refuse(["./tool", "evil.py"], work, env) or "").startswith("not_allowed: script")
    assert guard.refuse(["./tool", "job.py"], work, env) is None
    (work / ".local").mkdir()  # user site-packages in $HOME: .pth files run at start
    assert "$HOME has .local" in (guard.refuse([str(python), "job.py"], work, env) or "")
    (work / ".local").rmdir()
    policy.own_inline = {sha_of(python)}
    assert guard.refuse([str(python), "-c", "1"], work, env) is None
