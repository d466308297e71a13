"""`--limit KEY=VALUE`: per-task resource limits on the command line."""

from __future__ import annotations

from ..jobfile import limit_value
from ._common import Fail, key_values


def parse_limits(values: tuple[str, ...]) -> dict[str, float]:
    """Limits from KEY=VALUE options: seconds, counts, or bytes (sizes like 200M allowed)."""
    out: dict[str, float] = {}
    for key, text in key_values(values, "--limit").items():
        try:
            out[key] = limit_value(key, text)
        except ValueError as exc:
            raise Fail(f"--limit {exc}") from None
    return out
