"""The autoscaler's state (admin): `GET /scale`, what `corral scale` shows."""

from __future__ import annotations

from starlette.requests import Request

from ...protocol import ScaleStatus
from ..service import Coordinator
from ._common import Endpoint

NOT_SCALING = "no provider configured: start the coordinator with --scale KIND:OPTIONS"


async def scale_status(request: Request, coord: Coordinator, _: None) -> ScaleStatus:
    if coord.autoscaler is None:
        return ScaleStatus(leader=False, providers=[], launches=[], reasons=[NOT_SCALING])
    return coord.autoscaler.status()


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET",
        "/scale",
        scale_status,
        "The autoscaler: providers, recent launches and why it decided what it did (admin)",
        None,
        ScaleStatus,
    ),
]

__all__ = ["ENDPOINTS", "NOT_SCALING"]
