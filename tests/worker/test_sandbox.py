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
    system_view,
    wants_network,
)
from corral.worker.taskuser import Identity, TaskUsers, reach_plan

TASK = Path("/srv/w/tasks/t1.1/work")
SYSTEM = (
    ("--ro-bind", "/usr", "/usr"),
    ("--symlink", "usr/bin", "/bin"),
    ("--ro-bind", "/opt", "/opt"),
    ("--ro-bind-try", "/etc/passwd", "/etc/passwd"),
)
BWRAP = SandboxPolicy(
    "/usr/bin/bwrap", hide=(Path("/srv/w"), Path("/home/u")), prlimit="/p", system=SYSTEM
)


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_no_bwrap_means_no_prefix_and_says_so() -> None:
    weak = SandboxPolicy(None)
    assert sandbox_prefix(weak, TASK, network=True) == []
    assert (weak.name, weak.network) == ("none", "yes")


def test_only_the_system_the_task_dir_and_tmp_are_there() -> None:
    argv = sandbox_prefix(BWRAP, TASK, network=False)
    assert argv[0] == "/usr/bin/bwrap"
    assert pairs(argv, "--ro-bind") == ["/usr", "/opt"]
    assert pairs(argv, "--ro-bind-try") == ["/etc/passwd"]
    assert pairs(argv, "--symlink") == ["usr/bin"]
    assert "/" not in pairs(argv, "--ro-bind") + pairs(argv, "--bind")
    assert pairs(argv, "--bind") == [str(TASK)]
    assert pairs(argv, "--chdir") == [str(TASK)]
    assert pairs(argv, "--tmpfs") == ["/dev/shm", "/tmp"]  # no worker dir there to hide
    assert pairs(argv, "--remount-ro") == ["/", "/dev"]  # nothing new at the top level
    assert argv[-1] == "--"


def test_a_worker_dir_inside_a_visible_tree_is_covered_before_the_task_dir() -> None:
    policy = SandboxPolicy("b", hide=(Path("/opt/corral"),), system=SYSTEM)
    task = Path("/opt/corral/tasks/t1.1/work")
    argv = sandbox_prefix(policy, task, network=False)
    assert pairs(argv, "--tmpfs") == ["/dev/shm", "/tmp", "/opt/corral"]
    assert argv.index("/opt/corral") < argv.index("--bind")


def test_a_hidden_dir_inside_another_or_the_task_dir_itself_is_not_mounted_twice() -> None:
    hide = (Path("/opt/w/cache"), Path("/opt/w"), TASK, TASK / "x")
    policy = SandboxPolicy("bwrap", hide=hide, system=SYSTEM)
    assert pairs(sandbox_prefix(policy, TASK, False), "--tmpfs") == ["/dev/shm", "/tmp", "/opt/w"]
    root = SandboxPolicy("b", hide=(Path("/"),), system=SYSTEM)
    assert "/" not in pairs(sandbox_prefix(root, TASK, False), "--tmpfs")


def test_namespaces_capabilities_and_lifetime() -> None:
    argv = sandbox_prefix(BWRAP, TASK, network=False)
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"):
        assert flag in argv
    assert "--disable-userns" in argv  # no nested user namespace to regain capabilities
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


def test_python_and_corral_are_bound_read_only_wherever_they_live() -> None:
    policy = SandboxPolicy(
        "bwrap",
        hide=(Path("/home/u"), Path("/srv/w")),
        expose=(Path("/home/u/.pyenv/3.11"), Path("/usr/lib/python3"), Path("/home/u"), TASK),
        system=SYSTEM,
    )
    argv = sandbox_prefix(policy, TASK, network=False)
    # /usr/lib/python3 is there with /usr; the task dir is bound read-write on its own
    assert pairs(argv, "--ro-bind") == ["/usr", "/opt", "/home/u", "/home/u/.pyenv/3.11"]
    assert pairs(argv, "--bind") == [str(TASK)]


def test_exposed_read_write_dirs_are_bound_writable() -> None:
    policy = SandboxPolicy("b", system=SYSTEM, expose_rw=(Path("/data/shared"),))
    argv = sandbox_prefix(policy, TASK, network=False)
    assert pairs(argv, "--bind") == ["/data/shared", str(TASK)]


def test_the_seccomp_filter_is_passed_by_descriptor() -> None:
    argv = sandbox_prefix(BWRAP, TASK, network=False, seccomp_fd=9)
    assert pairs(argv, "--seccomp") == ["9"]
    assert "--seccomp" not in sandbox_prefix(BWRAP, TASK, network=False)


def test_the_system_view_allows_etc_entries_by_name(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "etc" / "ssh").mkdir(parents=True)
    for name in ("passwd", "shadow", "gshadow", "sudoers", "ssh/ssh_host_rsa_key", "new.token"):
        (tmp_path / "etc" / name).write_text("x")
    view = system_view(tmp_path)
    assert ("--symlink", "usr/bin", "/bin") in view
    etc = [dest for _, _, dest in view if dest.startswith("/etc")]
    assert etc == ["/etc/passwd"]  # never shadow, sudoers, host keys, nor a file added later


def test_a_slot_uid_reaches_its_binds_through_the_first_directory_it_cannot_search() -> None:
    closed = {Path("/home/admin"), Path("/srv/w")}
    plan = reach_plan(
        [
            Path("/home/admin/.pyenv/3.11"),
            Path("/usr"),
            Path("/srv/w/tasks/t/work"),
            Path("/home/admin/x"),
        ],
        lambda p: p not in closed,
    )
    assert plan == {
        Path("/home/admin"): [Path("/home/admin/x"), Path("/home/admin/.pyenv/3.11")],
        Path("/srv/w"): [Path("/srv/w/tasks/t/work")],
    }


def test_task_users_by_mode() -> None:
    assert TaskUsers.choose(root=False).take() is None  # a non-root worker: itself
    with pytest.raises(ValueError, match="non-root"):
        TaskUsers.choose((0, 10), root=True)
    with pytest.raises(ValueError, match="belongs to an account"):
        TaskUsers.choose((1, 65534), root=True)  # bin, daemon, nobody...
    with pytest.raises(ValueError, match="no such user"):
        TaskUsers.choose(user="corral-no-such-user", root=True)
    fixed = TaskUsers("user", user=Identity(1234, 1234))
    assert fixed.take() == fixed.take() == Identity(1234, 1234)


def test_slot_uids_are_never_shared_while_held(tmp_path: Path) -> None:
    users = TaskUsers("slot-uids", (61000, 61002), lock_dir=tmp_path)
    others = TaskUsers("slot-uids", (61000, 61002), lock_dir=tmp_path)  # another worker
    a, b = users.take(), others.take()
    assert a is not None and b is not None and a.uid != b.uid
    c = users.take()
    assert c is not None and c.uid not in (a.uid, b.uid)
    with pytest.raises(RuntimeError, match="in use"):
        others.take()
    users.give_back(a)
    again = others.take()
    assert again is not None and again.uid == a.uid
    for held, owner in ((b, others), (c, users), (again, others)):
        owner.give_back(held)


def test_default_exposed_holds_this_python_and_corral() -> None:
    import sys

    import corral

    exposed = default_exposed()
    assert Path(sys.base_prefix).resolve() in exposed
    assert Path(corral.__file__).resolve().parents[1] in exposed


def test_daemon_sockets_are_covered_where_a_visible_tree_holds_them() -> None:
    policy = SandboxPolicy(
        "bwrap",
        hide=(Path("/home/u"),),
        sockets=(Path("/opt/docker.sock"), Path("/run/podman.sock")),
        system=SYSTEM,
    )
    argv = sandbox_prefix(policy, TASK, network=False)
    i = argv.index("/opt/docker.sock")
    assert argv[i - 2 : i + 1] == ["--ro-bind", "/dev/null", "/opt/docker.sock"]
    assert "/run/podman.sock" not in argv  # /run is not there at all


def test_a_python_living_under_tmp_is_bound_back_over_the_private_tmp() -> None:
    venv = Path("/tmp/checkout/.venv")
    policy = SandboxPolicy("bwrap", expose=(venv, Path("/usr/lib")), system=SYSTEM)
    argv = sandbox_prefix(policy, TASK, network=False)
    assert pairs(argv, "--ro-bind") == ["/usr", "/opt", str(venv)]  # /usr/lib: with /usr
    assert argv.index(str(venv)) > argv.index("/tmp")  # after the tmpfs that would hide it
