"""Tests for task-directory snapshots, output detection and safe paths."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.worker.outputs import (
    Entry,
    UnsafePath,
    changed_files,
    resolve_inside,
    safe_relpath,
    sha256_file,
    snapshot,
)


def write(root: Path, rel: str, data: bytes = b"data") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def bump_mtime(path: Path, seconds: int = 10) -> None:
    """Move mtime forward explicitly: coarse filesystem clocks may not show a quick rewrite."""
    st_ = path.stat()
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + seconds * 1_000_000_000))


@pytest.fixture
def task(tmp_path: Path) -> Path:
    """A task directory holding two staged inputs."""
    root = tmp_path / "task"
    write(root, "input.txt", b"hello world")
    write(root, "data/table.csv", b"a,b\n1,2\n")
    return root


def known_hashes(root: Path) -> dict[str, str]:
    return {rel: sha256_file(root / rel) for rel in ("input.txt", "data/table.csv")}


def test_snapshot_records_files_with_known_hashes(task: Path) -> None:
    (task / "input.txt").chmod(0o640)
    snap = snapshot(task, {"input.txt": "ab" * 32})
    assert set(snap) == {"input.txt", "data/table.csv"}
    entry = snap["input.txt"]
    assert entry == Entry(
        size=11, mtime_ns=(task / "input.txt").stat().st_mtime_ns, mode=0o640, sha256="ab" * 32
    )
    assert snap["data/table.csv"].sha256 is None


def test_sha256_file_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) * 2 + 17)
    path = write(tmp_path, "big", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_new_file_in_nested_subdir_detected(task: Path) -> None:
    before = snapshot(task, known_hashes(task))
    write(task, "out/a/b/c/result.bin")
    assert changed_files(task, before) == ["out/a/b/c/result.bin"]


def test_unchanged_inputs_not_reported(task: Path) -> None:
    before = snapshot(task, known_hashes(task))
    assert changed_files(task, before) == []


@pytest.mark.parametrize("with_hash", [True, False])
def test_changed_input_same_size_reported(task: Path, with_hash: bool) -> None:
    before = snapshot(task, known_hashes(task) if with_hash else None)
    path = write(task, "input.txt", b"HELLO WORLD")
    bump_mtime(path)
    assert changed_files(task, before) == ["input.txt"]


def test_touched_input_with_same_content_not_reported(task: Path) -> None:
    before = snapshot(task, known_hashes(task))
    bump_mtime(task / "input.txt")
    write(task, "data/table.csv", b"a,b\n1,2\n")  # rewritten with identical bytes
    bump_mtime(task / "data/table.csv")
    assert changed_files(task, before) == []


def test_touched_file_without_known_hash_counts_as_changed(task: Path) -> None:
    before = snapshot(task)
    bump_mtime(task / "input.txt")
    assert changed_files(task, before) == ["input.txt"]


def test_size_change_with_restored_mtime_reported(task: Path) -> None:
    before = snapshot(task, known_hashes(task))
    path = task / "input.txt"
    write(task, "input.txt", b"hello world, longer")
    os.utime(path, ns=(before["input.txt"].mtime_ns, before["input.txt"].mtime_ns))
    assert changed_files(task, before) == ["input.txt"]


def test_deleted_input_not_reported(task: Path) -> None:
    before = snapshot(task, known_hashes(task))
    (task / "input.txt").unlink()
    assert changed_files(task, before) == []


GLOB_FILES = [
    "top.txt",
    "top.csv",
    "out/a.txt",
    "out/b.csv",
    "out/x/y/a.txt",
    "out/x/y/c.log",
    "other/a.txt",
    "deep/q/r.csv",
]


@pytest.mark.parametrize(
    ("globs", "expected"),
    [
        (["out/**/*.txt"], ["out/a.txt", "out/x/y/a.txt"]),
        (["*.csv"], ["deep/q/r.csv", "out/b.csv", "top.csv"]),
        (["**/*.txt"], ["other/a.txt", "out/a.txt", "out/x/y/a.txt", "top.txt"]),
        (["out/*.csv", "top.*"], ["out/b.csv", "top.csv", "top.txt"]),
        (["out/**/y/*.log"], ["out/x/y/c.log"]),
        (["**/y/**/c.log"], ["out/x/y/c.log"]),
        (["a.txt"], ["other/a.txt", "out/a.txt", "out/x/y/a.txt"]),
        (["./top.txt"], ["top.txt"]),
        (["nothing/**/*.txt", "*.pdf"], []),
        ([], sorted(GLOB_FILES)),
    ],
)
def test_globs_filter_changed_files(tmp_path: Path, globs: list[str], expected: list[str]) -> None:
    before = snapshot(tmp_path)
    for rel in GLOB_FILES:
        write(tmp_path, rel)
    assert changed_files(tmp_path, before, globs) == expected


def test_glob_is_case_sensitive(tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    write(tmp_path, "OUT.TXT")
    assert changed_files(tmp_path, before, ["*.txt"]) == []


def test_symlinks_skipped(tmp_path: Path) -> None:
    root, outside = tmp_path / "task", tmp_path / "outside"
    write(outside, "secret.txt")
    write(outside, "dir/inner.txt")
    write(root, "real.txt")
    before = snapshot(root)
    (root / "link_out.txt").symlink_to(outside / "secret.txt")
    (root / "link_in.txt").symlink_to(root / "real.txt")
    (root / "link_dir").symlink_to(outside / "dir", target_is_directory=True)
    (root / "dangling").symlink_to(tmp_path / "missing")
    write(root, "new.txt")
    assert changed_files(root, before) == ["new.txt"]
    assert set(snapshot(root)) == {"real.txt", "new.txt"}


def test_special_files_skipped(tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    assert changed_files(tmp_path, before) == []


def test_unreadable_directory_skipped(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any directory")
    before = snapshot(tmp_path)
    write(tmp_path, "locked/x.txt")
    write(tmp_path, "ok.txt")
    (tmp_path / "locked").chmod(0)
    try:
        assert changed_files(tmp_path, before) == ["ok.txt"]
    finally:
        (tmp_path / "locked").chmod(stat.S_IRWXU)


@pytest.mark.parametrize(
    "bad",
    ["/etc/passwd", "../x", "a/../../x", "a/..", "a\x00b", "", ".", "./", "//", "a\\..\\b", "a\nb"],
)
def test_safe_relpath_rejects(bad: str) -> None:
    with pytest.raises(UnsafePath):
        safe_relpath(bad)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a", "a"), ("a//b/./c/", "a/b/c"), ("./x.txt", "x.txt"), ("..a/b..", "..a/b.."), ("é", "é")],
)
def test_safe_relpath_normalises(name: str, expected: str) -> None:
    assert safe_relpath(name) == PurePosixPath(expected)


def test_resolve_inside_allows_plain_and_missing_paths(tmp_path: Path) -> None:
    write(tmp_path, "a/b.txt")
    assert resolve_inside(tmp_path, PurePosixPath("a/b.txt")) == tmp_path / "a" / "b.txt"
    assert resolve_inside(tmp_path, PurePosixPath("new/dir/f")) == tmp_path / "new/dir/f"


def test_resolve_inside_allows_symlink_within_root(tmp_path: Path) -> None:
    write(tmp_path, "real/f.txt")
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    assert resolve_inside(tmp_path, PurePosixPath("alias/f.txt")) == tmp_path / "alias/f.txt"


def test_resolve_inside_rejects_symlink_leading_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "task", tmp_path / "outside"
    root.mkdir()
    write(outside, "f.txt")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "file_link").symlink_to(outside / "f.txt")
    (root / "sneaky").symlink_to("../outside", target_is_directory=True)
    for rel in ("escape/f.txt", "escape/new.txt", "escape", "file_link", "sneaky/x"):
        with pytest.raises(UnsafePath, match="outside"):
            resolve_inside(root, PurePosixPath(rel))


def test_resolve_inside_rejects_prefix_sibling(tmp_path: Path) -> None:
    # /x/task-evil shares a string prefix with /x/task but is not inside it.
    root = tmp_path / "task"
    root.mkdir()
    (tmp_path / "task-evil").mkdir()
    (root / "l").symlink_to(tmp_path / "task-evil", target_is_directory=True)
    with pytest.raises(UnsafePath):
        resolve_inside(root, PurePosixPath("l/x"))


@pytest.mark.parametrize("rel", ["/etc/passwd", "../x", "a/../../x", "."])
def test_resolve_inside_rejects_unsafe_rel(tmp_path: Path, rel: str) -> None:
    with pytest.raises(UnsafePath):
        resolve_inside(tmp_path, PurePosixPath(rel))


SEGMENTS = st.sampled_from(["a", "b.c", ".", "..", "", "...", "x y", "\\", "\x00", "/", "C:"])
NAMES = st.one_of(
    st.lists(SEGMENTS, max_size=6).map("/".join),
    st.text(alphabet="ab./\\\x00:~ \n", max_size=16),
)


@given(NAMES)
def test_accepted_relpath_stays_inside_root(name: str) -> None:
    root = "/srv/corral/task"
    try:
        rel = safe_relpath(name)
    except UnsafePath:
        return
    joined = os.path.normpath(os.path.join(root, str(rel)))
    assert joined.startswith(root + "/")
    assert ".." not in rel.parts
    assert safe_relpath(str(rel)) == rel  # normalised form is a fixed point
