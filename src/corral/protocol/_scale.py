"""Wire models of `GET /api/v1/scale` (`corral scale`): the autoscaler's providers, its
recent launches and the policy's latest reasons."""

from __future__ import annotations

import msgspec


class ScaleProviderInfo(msgspec.Struct):
    """One configured provider: its limits, what its workers offer, and its counts."""

    name: str
    kind: str
    min: int
    max: int
    slots: int
    labels: dict[str, str]
    idle_timeout: float
    join_timeout: float
    running: int  # its workers joined and not gone (draining ones included)
    launching: int  # launches not joined yet
    launched: int  # launches since this coordinator started
    failed: int  # of which failed: the provider refused, or no worker joined in time


class LaunchInfo(msgspec.Struct):
    """One launch: a worker a provider was asked to start; its name is the launch id.

    state: starting -> launched -> joined -> draining -> stopped, or failed at any point
    before joining (error says why); `adopted` for a running worker whose name marks it as
    a provider's that this coordinator did not launch (it started after the launch)."""

    id: str
    provider: str
    state: str
    started: float
    handle: str | None = None
    worker_id: str | None = None
    ended: float | None = None
    error: str | None = None


class ScaleStatus(msgspec.Struct):
    """What the autoscaler does and why; `leader` False on a coordinator that waits for
    another to stop leading (PostgreSQL), whose figures are then empty."""

    leader: bool
    providers: list[ScaleProviderInfo]
    launches: list[LaunchInfo]
    reasons: list[str]
    decided: float | None = None  # when the reasons were given
