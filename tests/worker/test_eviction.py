"""What a worker does on a signal (eviction.py): pure, no processes."""

from __future__ import annotations

import signal

from corral.worker.config import WorkerConfig
from corral.worker.eviction import DEFAULT_GRACE, on_signal


def test_sigterm_evicts_at_once_and_sigint_drains_first() -> None:
    assert on_signal(signal.SIGTERM, draining=False) == "evict"
    assert on_signal(signal.SIGTERM, draining=True) == "evict"
    assert on_signal(signal.SIGINT, draining=False) == "drain"
    assert on_signal(signal.SIGINT, draining=True) == "evict"  # a second Ctrl-C


def test_the_default_grace_fits_inside_what_init_systems_wait_before_sigkill() -> None:
    assert WorkerConfig("http://127.0.0.1:1").checkpoint_grace == DEFAULT_GRACE == 10.0
    assert DEFAULT_GRACE < 30.0  # Kubernetes' default, with room left for the upload
