"""A task asks the worker to save its checkpoint through files in its state directory; the
worker (perhaps root) reads and removes the request and writes the reply only in that
directory itself, never through a symlink the task put at its name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from corral.protocol import CHECKPOINT_DIR, REPLY_FILE, REQUEST_FILE, STATE_DIR
from corral.worker.checkpoints import _reply, _take_request, copy_out


def test_a_request_is_taken_and_answered_in_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "work" / STATE_DIR
    state.mkdir(parents=True)
    (state / REQUEST_FILE).write_text("tok-1\n")
    assert _take_request(state) == "tok-1"
    assert not (state / REQUEST_FILE).exists()  # consumed
    _reply(state, "tok-1 ok 3\n")
    assert (state / REPLY_FILE).read_text() == "tok-1 ok 3\n"
    assert (os.stat(state / REPLY_FILE).st_mode & 0o777) == 0o644
    assert _take_request(state) is None  # nothing pending


def test_a_state_directory_replaced_by_a_symlink_is_left_alone(tmp_path: Path) -> None:
    elsewhere = tmp_path / "host-dir"  # say, a directory of the host's the task cannot write
    elsewhere.mkdir()
    (elsewhere / REQUEST_FILE).write_text("tok-2\n")
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(elsewhere, work / STATE_DIR)
    assert _take_request(work / STATE_DIR) is None
    assert (elsewhere / REQUEST_FILE).exists()  # not removed through the link
    _reply(work / STATE_DIR, "tok-2 ok 1\n")
    assert sorted(os.listdir(elsewhere)) == [REQUEST_FILE]  # nothing written through it


def test_a_checkpoint_is_copied_out_only_from_the_tasks_own_directories(tmp_path: Path) -> None:
    work = tmp_path / "work"
    checkpoint = work / STATE_DIR / CHECKPOINT_DIR
    (checkpoint / "sub").mkdir(parents=True)
    (checkpoint / "sub" / "state.bin").write_bytes(b"mine")
    os.symlink("/etc/hostname", checkpoint / "link")  # never followed
    copies = copy_out(checkpoint, tmp_path / "out1")
    assert sorted(copies) == ["sub/state.bin"] and copies["sub/state.bin"].read_bytes() == b"mine"

    # another task's checkpoint, which this task points its own names at
    victim = tmp_path / "victim" / STATE_DIR / CHECKPOINT_DIR
    victim.mkdir(parents=True)
    (victim / "secret").write_bytes(b"theirs")
    shutil.rmtree(work / STATE_DIR)
    os.symlink(victim.parent, work / STATE_DIR)
    assert copy_out(checkpoint, tmp_path / "out2") == {}
    os.unlink(work / STATE_DIR)
    (work / STATE_DIR).mkdir()
    os.symlink(victim, checkpoint)
    assert copy_out(checkpoint, tmp_path / "out3") == {}
    os.unlink(checkpoint)
    assert copy_out(checkpoint, tmp_path / "out4") == {}  # none at all: nothing to save
