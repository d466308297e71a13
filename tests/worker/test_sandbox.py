"""The sandbox decision: policy and task in, bwrap argv prefix out (no processes started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.worker.sandbox import (
    SandboxPolicy,
    default_exposed,
    default_hidden,
    probe,
    sandbox_prefix,
    wants_network,
)

TASK = Path("/srv/w/tasks/t1.1/work")
BWRAP = SandboxPolicy("/usr/bin/bwrap", hide=(Path("/srv/w"), Path("/home/u")), prlimit="/p")


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_no_bwrap_means_no_prefix_and_says_so() -> None:
    weak = SandboxPolicy(None)
    assert sandbox_prefix(weak, TASK, network=True) == []
    assert (weak.name, weak.network) == ("none", "yes")


def test_the_system_is_read_only_and_only_the_task_dir_and_tmp_are_writable() -> None:
    argv = sandbox_prefix(BWRAP, TASK, network=False)
    assert argv[0] == "/usr/bin/bwrap"
    assert argv[argv.index("--ro-bind") : argv.index("--ro-bind") + 3] == ["--ro-bind", "/", "/"]
    assert pairs(argv, "--bind") == [str(TASK)]
    assert pairs(argv, "--chdir") == [str(TASK)]
    assert "/tmp" in pairs(argv, "--tmpfs")
    assert argv[-1] == "--"


def test_worker_dirs_are_hidden_before_the_task_dir_is_bound_back() -> None:
    argv = sandbox_prefix(BWRAP, TASK, network=False)
    tmpfs = pairs(argv, "--tmpfs")
    assert {"/srv/w", "/home/u"} <= set(tmpfs)
    bind = argv.index("--bind")
    assert all(argv.index(p) < bind for p in ("/srv/w", "/home/u"))


def test_a_hidden_dir_inside_another_or_the_task_dir_itself_is_not_mounted_twice() -> None:
    policy = SandboxPolicy("bwrap", hide=(Path("/srv/w/cache"), Path("/srv/w"), TASK, TASK / "x"))
    assert pairs(sandbox_prefix(policy, TASK, False), "--tmpfs") == ["/tmp", "/srv/w"]
    assert "/" not in pairs(
        sandbox_prefix(SandboxPolicy("b", hide=(Path("/"),)), TASK, False), "--tmpfs"
    )


def test_namespaces_capabilities_and_lifetime() -> None:
    argv = sandbox_prefix(BWRAP, TASK, network=False)
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"):
        assert flag in argv
    for flag in ("--die-with-parent", "--new-session", "--unshare-net"):
        assert flag in argv
    assert pairs(argv, "--cap-drop") == ["ALL"]


def test_network_needs_both_the_task_and_the_worker() -> None:
    allowing = SandboxPolicy("bwrap", allow_network=True)
    assert "--unshare-net" in sandbox_prefix(BWRAP, TASK, network=True)
    assert "--unshare-net" in sandbox_prefix(allowing, TASK, network=False)
    assert "--unshare-net" not in sandbox_prefix(allowing, TASK, network=True)
    assert (BWRAP.network, allowing.network) == ("no", "yes")
    assert wants_network({"network": "yes"}) and not wants_network({"network": "no"})
    assert not wants_network({})


def test_the_processes_limit_is_set_inside_the_sandbox() -> None:
    argv = sandbox_prefix(BWRAP, TASK, network=False, nproc=7)
    assert argv[-4:] == ["--", "/p", "--nproc=7:7", "--"]
    assert "/p" not in sandbox_prefix(BWRAP, TASK, network=False)


def test_default_hidden_covers_work_dir_home_and_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, config = tmp_path / "home", tmp_path / "cfg"
    home.mkdir()
    config.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    hidden = default_hidden(tmp_path / "work", [tmp_path / "data", Path("/")])
    assert home in hidden and config in hidden
    assert Path("/") not in hidden
    assert tmp_path / "missing" not in hidden  # nothing to mount over


def test_probe_without_bwrap_on_path_means_no_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert probe(tmp_path) is None


def test_python_and_corral_come_back_read_only_from_a_hidden_home() -> None:
    policy = SandboxPolicy(
        "bwrap",
        hide=(Path("/home/u"), Path("/srv/w")),
        expose=(Path("/home/u/.pyenv/3.11"), Path("/usr/lib/python3"), Path("/home/u"), TASK),
    )
    argv = sandbox_prefix(policy, TASK, network=False)
    ro = pairs(argv, "--ro-bind")
    # only what a hidden dir covered, and never a hidden dir itself
    assert ro == ["/", "/home/u/.pyenv/3.11"]
    assert argv.index("/home/u/.pyenv/3.11") > argv.index("/home/u")  # after the tmpfs


def test_default_exposed_holds_this_python_and_corral() -> None:
    import sys

    import corral

    exposed = default_exposed()
    assert Path(sys.base_prefix).resolve() in exposed
    assert Path(corral.__file__).resolve().parents[1] in exposed


def test_daemon_sockets_are_covered_unless_already_hidden() -> None:
    policy = SandboxPolicy(
        "bwrap",
        hide=(Path("/home/u"),),
        sockets=(Path("/run/docker.sock"), Path("/home/u/podman.sock")),
    )
    argv = sandbox_prefix(policy, TASK, network=False)
    i = argv.index("/run/docker.sock")
    assert argv[i - 2 : i + 1] == ["--ro-bind", "/dev/null", "/run/docker.sock"]
    assert "/home/u/podman.sock" not in argv  # under a tmpfs already


def test_a_python_living_under_tmp_is_bound_back_over_the_private_tmp() -> None:
    venv = Path("/tmp/checkout/.venv")
    policy = SandboxPolicy("bwrap", hide=(Path("/srv/w"),), expose=(venv, Path("/usr/lib")))
    argv = sandbox_prefix(policy, TASK, network=False)
    ro = [argv[i + 1] for i, a in enumerate(argv) if a == "--ro-bind" and argv[i + 1] != "/"]
    assert ro == [str(venv)]  # /usr/lib is visible anyway
    assert argv.index(str(venv)) > argv.index("/tmp")  # after the tmpfs that would hide it
