"""The worker's small asyncio helpers: the Sweeper removes what it is given, in batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral._loop import new_event_loop, uses_uvloop
from corral.worker._aio import Sweeper


def _tree(root: Path) -> Path:
    (root / "work" / ".corral").mkdir(parents=True)
    (root / "stdout").write_text("out")
    (root / "work" / "f").write_text("x")
    return root


def test_sweeper_removes_everything_asked_for_and_follows_no_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    dirs = [_tree(tmp_path / f"t{i}") for i in range(5)]
    (dirs[0] / "link").symlink_to(outside)

    async def main() -> None:
        sweeper = Sweeper()
        for d in dirs[:3]:
            sweeper.remove(d)
        await asyncio.sleep(0)
        for d in dirs[3:]:  # asked for while a sweep runs: the next one takes them
            sweeper.remove(d)
        await sweeper.wait()
        await sweeper.wait()  # nothing left: returns at once

    asyncio.run(main())
    assert not any(d.exists() for d in dirs)
    assert (outside / "keep").read_text() == "kept"


def test_the_event_loop_is_uvloop_when_installed() -> None:
    loop = new_event_loop()
    try:
        assert uses_uvloop(loop)  # uvicorn[standard] brings it: a dependency
    finally:
        loop.close()
