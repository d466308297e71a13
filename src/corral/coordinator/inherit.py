"""What tasks submitted by a running task take from it (pure).

A task that was given the network (`requires network=yes`) and forks children through
`corral.current()` or `corral submit --job` expects them to reach the network too; making
every child say so again would break a recursive function that never names its own needs.
A child that names `network` itself keeps its own choice.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ..protocol import TaskSpec

__all__ = ["INHERITED", "inherit_requires"]

INHERITED = ("network",)  # requirements a child takes from its parent unless it names them


def inherit_requires(specs: list[TaskSpec], parent: Mapping[str, str]) -> list[TaskSpec]:
    """`specs` with the parent's INHERITED requirements added where a child does not name them."""
    given = {k: parent[k] for k in INHERITED if k in parent}
    if not given:
        return specs
    out = []
    for spec in specs:
        missing = {k: v for k, v in given.items() if k not in spec.requires}
        if missing:
            spec = msgspec.structs.replace(spec, requires={**spec.requires, **missing})
        out.append(spec)
    return out
