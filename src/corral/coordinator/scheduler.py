"""Matching tasks to workers: pure functions from facts to decisions, no I/O.

A task's `requires` is a flat map of strings. Known keys:
os, arch, min_cpus, min_memory, min_disk, gpus, programs (comma-separated), python
(major.minor prefix), sandbox, label.NAME, env.NAME (value, or * for "defined").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping


def _num(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _at_least(
    key: str, field: str, unit: str = ""
) -> Callable[[str, Mapping[str, object]], str | None]:
    def check(want: str, caps: Mapping[str, object]) -> str | None:
        have = _num(caps.get(field))
        if have < _num(want):
            return f"{key}={want} but worker has {have:g}{unit}"
        return None

    return check


def _equal(key: str) -> Callable[[str, Mapping[str, object]], str | None]:
    def check(want: str, caps: Mapping[str, object]) -> str | None:
        have = caps.get(key)
        return None if str(have) == want else f"{key}={want} but worker has {have}"

    return check


def _programs(want: str, caps: Mapping[str, object]) -> str | None:
    have = caps.get("programs")
    names = set(have) if isinstance(have, list | dict) else set()
    lacking = [p for p in want.split(",") if p and p not in names]
    return f"lacks program {', '.join(lacking)}" if lacking else None


def _python(want: str, caps: Mapping[str, object]) -> str | None:
    have = str(caps.get("python", ""))
    ok = have == want or have.startswith(want + ".")
    return None if ok else f"python={want} but worker has {have or 'unknown'}"


def _mapped(field: str, key: str, want: str, caps: Mapping[str, object]) -> str | None:
    table = caps.get(field)
    have = table.get(key) if isinstance(table, dict) else None
    if have is None:
        return f"{field} {key} is not set"
    if want != "*" and str(have) != want:
        return f"{field} {key}={have}, not {want}"
    return None


_CHECKS: dict[str, Callable[[str, Mapping[str, object]], str | None]] = {
    "os": _equal("os"),
    "arch": _equal("arch"),
    "sandbox": _equal("sandbox"),
    "min_cpus": _at_least("min_cpus", "cpus"),
    "min_memory": _at_least("min_memory", "memory_free"),
    "min_disk": _at_least("min_disk", "disk_free"),
    "gpus": _at_least("gpus", "gpus"),
    "programs": _programs,
    "python": _python,
}


def requirement_problem(key: str) -> str | None:
    """Why a requirement key is not understood, or None."""
    if key in _CHECKS or key.startswith(("label.", "env.")):
        return None
    known = ", ".join(sorted(_CHECKS))
    return f"unknown requirement {key!r} (known: {known}, label.NAME, env.NAME)"


def unmet(requires: Mapping[str, str], caps: Mapping[str, object]) -> list[str]:
    """Reasons a worker with `caps` cannot run a task with `requires` (empty: it can)."""
    reasons = []
    for key, want in requires.items():
        if key.startswith("label."):
            why = _mapped("labels", key[6:], want, caps)
        elif key.startswith("env."):
            why = _mapped("env", key[4:], want, caps)
        else:
            check = _CHECKS.get(key)
            why = check(want, caps) if check else f"unknown requirement {key}"
        if why:
            reasons.append(why)
    return reasons


def fits(requires: Mapping[str, str], caps: Mapping[str, object]) -> bool:
    """Whether a worker with `caps` may run a task with `requires`."""
    return not unmet(requires, caps)
