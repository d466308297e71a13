"""A pooled runner's part of a task's directory (_inside.py): made with its inputs, then what
the call made or changed found and read, within the answer's budget, never through a link."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from corral.worker._inside import collect, prepare


def _inputs(**files: bytes) -> dict[str, tuple[int, str, bytes]]:
    return {k: (0o640, hashlib.sha256(v).hexdigest(), v) for k, v in files.items()}


def test_prepare_makes_the_directory_and_writes_each_input_once(tmp_path: Path) -> None:
    cwd = str(tmp_path / "inner" / "work")
    before = prepare(cwd, {**_inputs(a=b"1"), "sub/b": (0o755, "0" * 64, b"22")})
    assert (Path(cwd) / ".corral" / "checkpoint").is_dir()
    assert (Path(cwd) / "sub" / "b").read_bytes() == b"22"
    assert (os.stat(f"{cwd}/sub/b").st_mode & 0o777) == 0o755  # exactly, whatever the umask
    assert before["a"].size == 1 and before["a"].sha256 == hashlib.sha256(b"1").hexdigest()
    with pytest.raises(FileExistsError):  # a directory is never reused
        prepare(cwd, {})


def test_prepare_makes_the_next_directory_out_of_the_last_one(tmp_path: Path) -> None:
    old = str(tmp_path / "t1" / "work")
    prepare(old, _inputs(a=b"1"))
    Path(old, "out", "deep").mkdir(parents=True)
    Path(old, "out", "deep", "x").write_bytes(b"x")
    Path(old, ".corral", "checkpoint", "state").write_bytes(b"s")
    os.symlink("/etc", f"{old}/etc")  # removed, never followed
    new = str(tmp_path / "t2" / "work")
    before = prepare(new, _inputs(b=b"2"), reuse=old)
    assert not os.path.exists(tmp_path / "t1")
    assert sorted(os.listdir(new)) == [".corral", "b"] and list(before) == ["b"]
    assert os.listdir(f"{new}/.corral") == ["checkpoint"]
    assert os.listdir(f"{new}/.corral/checkpoint") == []
    assert os.path.isdir("/etc")
    # a task that replaced its state directory: the last one goes, the next is made anew
    Path(new, ".corral", "checkpoint").rmdir()
    Path(new, ".corral", "checkpoint").write_bytes(b"not a directory")
    third = str(tmp_path / "t3" / "work")
    prepare(third, {}, reuse=new)
    assert not os.path.exists(tmp_path / "t2") and os.path.isdir(f"{third}/.corral/checkpoint")


def test_collect_finds_new_and_changed_files_within_the_budget(tmp_path: Path) -> None:
    cwd = str(tmp_path / "inner" / "work")
    before = prepare(cwd, _inputs(same=b"same", changed=b"old"))
    Path(cwd, "changed").write_bytes(b"new")  # same size, new bytes: found by its hash
    Path(cwd, "new.txt").write_bytes(b"n" * 10)
    Path(cwd, "big").write_bytes(b"b" * 100)
    Path(cwd, ".corral", "checkpoint", "state").write_bytes(b"never an output")
    os.symlink("/etc/hostname", f"{cwd}/link")
    os.mkfifo(f"{cwd}/fifo")
    found = collect(cwd, before, [], each=50, total=12)
    assert found == [
        ("big", 0o644 & ~_umask(), 100, None),  # over `each`: the worker reads it
        ("changed", 0o640, 3, b"new"),
        ("new.txt", 0o644 & ~_umask(), 10, None),  # 3 + 10 > `total`
    ]
    assert collect(cwd, before, ["*.txt"], each=50, total=100) == [
        ("new.txt", 0o644 & ~_umask(), 10, b"n" * 10)
    ]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
