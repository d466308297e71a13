"""A coordinator for B5, with heartbeat and lease timings fit for 10,000 workers.

python -m bench.serve PORT DATA_DIR TOKEN
"""

from __future__ import annotations

import sys
from pathlib import Path

from corral._loop import run_async
from corral.coordinator import Settings
from corral.coordinator.server import make_server


def main() -> None:
    port, data, token = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    # 10,000 workers heartbeating every 2 s would be 5,000 requests/s on one core; a farm of
    # that size heartbeats every 15 s (lease timeout 60 s).
    settings = Settings(
        data_dir=data,
        tokens={token: "bench"},
        lease_timeout=60.0,
        heartbeat_interval=15.0,
        max_body_bytes=256 * 1024 * 1024,
    )
    run_async(make_server(settings, "127.0.0.1", port).serve())  # uvloop, as `corral server`


if __name__ == "__main__":
    main()
