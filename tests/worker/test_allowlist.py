"""The executable allowlist: parsing, the default mode, resolving argv[0], refusing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from corral.worker.allowlist import (
    AllowPolicy,
    HashCache,
    allow_mode,
    is_loopback_url,
    parse_hash,
    read_allow_file,
    refusal,
    resolve_program,
)

HEX = "ab" * 32


def test_parse_hash() -> None:
    assert parse_hash(f"sha256:{HEX.upper()}") == HEX
    assert parse_hash(HEX) == HEX
    for bad in ("sha256:abc", "md5:" + HEX, "zz" * 32):
        with pytest.raises(ValueError):
            parse_hash(bad)


def test_read_allow_file(tmp_path: Path) -> None:
    path = tmp_path / "allow.txt"
    path.write_text(f"# programs\nsha256:{HEX}  python 3.11\n\n{'cd' * 32}\n")
    assert read_allow_file(path) == {HEX, "cd" * 32}
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
    assert refusal(listed, "x", Path("/bin/x"), HEX) is None
    assert (
        refusal(listed, "y", Path("/bin/y"), "cd" * 32) == f"not_allowed: /bin/y sha256:{'cd' * 32}"
    )
    assert (
        refusal(listed, "zz", None, None) == "not_allowed: zz (not found, so it cannot be checked)"
    )
    assert refusal(AllowPolicy("all"), "zz", None, None) is None
    listed.remote = {"cd" * 32}  # the coordinator's list counts too
    assert refusal(listed, "y", Path("/bin/y"), "cd" * 32) is None


def test_hash_cache_rehashes_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "prog"
    path.write_bytes(b"one")
    cache = HashCache()
    assert cache.sha256(path) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"two!")
    assert cache.sha256(path) == hashlib.sha256(b"two!").hexdigest()
