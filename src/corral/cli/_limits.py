"""`--limit KEY=VALUE`: per-task resource limits on the command line."""

from __future__ import annotations

from ..protocol import LIMIT_KEYS, parse_size
from ._common import Fail, key_values

#: limits measured in bytes, which also take sizes such as 200M or 2G
BYTE_LIMITS = frozenset({"file_size", "memory", "output_size"})


def parse_limits(values: tuple[str, ...]) -> dict[str, float]:
    """Limits from KEY=VALUE options: seconds, counts, or bytes (sizes like 200M allowed)."""
    out: dict[str, float] = {}
    for key, text in key_values(values, "--limit").items():
        if key not in LIMIT_KEYS:
            raise Fail(f"--limit {key}: unknown limit (known: {', '.join(LIMIT_KEYS)})")
        try:
            value = float(parse_size(text)) if key in BYTE_LIMITS else float(text)
        except ValueError:
            raise Fail(f"--limit {key}={text}: not a number") from None
        if not value >= 0:
            raise Fail(f"--limit {key}={text}: must not be negative")
        out[key] = value
    return out
