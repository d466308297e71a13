"""Coordinator settings: plain data, passed in, never global."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Everything the coordinator needs to know at start."""

    data_dir: Path
    # where jobs, tasks and workers are kept: "" for the data directory's SQLite file, or a
    # postgresql:// URL several coordinators may share (store.open_store)
    store: str = ""
    # a directory of blobs; "": the database's blobs on a shared store, else blob_dir
    blobs: str = ""
    # admin tokens to accept, secret -> name; only their sha256 goes into the store
    tokens: dict[str, str] = field(default_factory=dict)
    lease_timeout: float = 10.0
    heartbeat_interval: float = 2.0
    max_lease_wait: float = 30.0
    max_body_bytes: int = 64 * 1024 * 1024
    max_blob_bytes: int = 64 * 1024 * 1024 * 1024
    max_tasks_per_job: int = 1_000_000
    lease_scan: int = 64
    max_prefetch_per_slot: int = 8  # leases a worker may hold beyond its slots, per slot
    job_key: bytes = b""  # signs job-scoped task tokens; empty: a new random key per start
    ca_file: Path | None = None  # served unauthenticated at /ca.pem for workers to pin
    # speculative jobs (speculation.py): a task running past max(factor x its phase's median,
    # min_seconds), once done_fraction of the phase is final, gets a backup attempt
    speculative_factor: float = 1.5
    speculative_min_seconds: float = 5.0
    speculative_done_fraction: float = 0.75
    # how often, at most, the running speculative phases are read afresh (and how long an
    # idle worker's lease request waits before looking for stragglers again)
    speculative_interval: float = 1.0
    # share one transaction among the writes of requests that arrive together
    # (group_commit.py): "on", "off", or "auto" (on a shared database only)
    group_commit: str = "auto"
    # serve GET /metrics without a token (a trusted network's Prometheus)
    metrics_public: bool = False
    # fair share (fairshare.py): seconds over which an owner's past usage counts half
    fair_share_half_life: float = 3600.0
    # autoscaling (autoscaler.py): `--scale KIND:OPTIONS` values, checked by the CLI, and the
    # URL the workers they start reach this coordinator at (a provider's url= overrides it)
    scale: tuple[str, ...] = ()
    url: str = ""
    ca_sha256: str = ""  # the fingerprint of ca_file, for the join strings launches are given
    scale_interval: float = 1.0  # seconds between decisions when nothing wakes the loop

    @property
    def db_path(self) -> Path:
        """The SQLite file."""
        return self.data_dir / "corral.db"

    @property
    def blob_dir(self) -> Path:
        """The content-addressed store."""
        return self.data_dir / "blobs"

    @property
    def live_dir(self) -> Path:
        """Output of running tasks, before their final stdout and stderr arrive."""
        return self.data_dir / "live"
