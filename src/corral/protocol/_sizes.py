"""Byte sizes and durations written the way people write them: 500M, 2G, 1.5GiB, 4096; 90s,
15m, 1h."""

from __future__ import annotations

import math
import re

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """Bytes in `text` (K, M, G, T, P are powers of 1024); raises ValueError when malformed."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size; write e.g. 4096, 500M or 2G")
    number, unit = match.groups()
    size = float(number) * 1024 ** _POWERS[unit.lower()]
    if not math.isfinite(size):  # hundreds of digits: bad input, not an OverflowError
        raise ValueError(f"{text[:40]!r}... is too large to be a size")
    return int(size)


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `15m`, `1h`, `7d` or `2w`; raises ValueError on anything else."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r}: give a positive duration like 90s, 15m, 1h, 7d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_size(n: float) -> str:
    """A short human size: 512 B, 1.5 KB, 20 MB, 1.2 GB (powers of 1024, as parse_size)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - the loop always returns
