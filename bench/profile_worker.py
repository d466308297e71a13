"""Profile real `corral worker` processes (sandboxed, as by default) on B1 or B2.

    .venv/bin/python -m bench.profile_worker b2 2000     # /bin/true tasks
    .venv/bin/python -m bench.profile_worker b1 3000     # no-op functions

Each worker runs under cProfile with `time.process_time` as its clock (the CPU it spends,
not the time it waits); their stats are summed and the top functions printed by own and
by cumulative time, with the CPU ms a task of each process (cpu.py) beside them.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from . import corral_side
from .farm import PYTHON, Farm


def _child(out: str, args: list[str]) -> None:
    """Run `corral ARGS` under the profiler; write its stats to `out` when it exits."""
    from corral.cli import cli

    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        cli.main(args, prog_name="corral")
    except SystemExit:
        pass
    finally:
        profile.disable()
        profile.dump_stats(out)


def main() -> None:
    """Run the chosen bench on a profiled farm; print the summed profile."""
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("bench", choices=["b1", "b2"])
    parser.add_argument("n", type=int)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--no-sandbox", action="store_true")
    args = parser.parse_args()
    stats_dir = Path(tempfile.mkdtemp(prefix="corral-profile-"))
    prefix = (PYTHON, "-m", "bench.profile_worker", "--child")
    outs = [stats_dir / f"w{i}.prof" for i in range(2)]

    class Profiled(Farm):
        def start_worker(self, i: int) -> None:
            self.worker_prefix = [*prefix, str(outs[i])]
            super().start_worker(i)

    farm = Profiled(workers=2, sandbox=not args.no_sandbox)
    with farm:
        farm.wait_workers()
        if args.bench == "b2":
            out = corral_side.run_commands(farm, ["/bin/true"], args.n, 300.0)
        else:
            out = corral_side.run_functions(farm, args.n, 300.0)
    print({k: v for k, v in out.items()})
    stats = pstats.Stats(*[str(p) for p in outs if p.exists()])
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
