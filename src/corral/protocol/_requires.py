"""Requirement maps: the slots a task takes, and nested forms flattened to the wire's keys.

On the wire `requires` is flat (`programs`, `label.NAME`, `env.NAME`, ...). Job files may also
write the nested forms: `programs = ["a", "b"]`, `labels = {site = "lab"}`, `env = {X = "*"}`.
"""

from __future__ import annotations

from collections.abc import Mapping

_NESTED = {"labels": "label.", "env": "env."}


def slots_needed(requires: Mapping[str, str]) -> int:
    """How many of a worker's slots a task takes: its `cpus` requirement, at least 1."""
    value = requires.get("cpus", "1")
    return max(int(value), 1) if value.isdigit() else 1


def _scalar(key: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{key}: must be a string or a number, not {type(value).__name__}")
    return str(value)


def flatten_requires(requires: Mapping[str, object]) -> dict[str, str]:
    """Flat wire requirements from a map that may use lists and nested tables; raises
    ValueError naming the key when a value has the wrong shape."""
    out: dict[str, str] = {}
    for key, value in requires.items():
        if key in _NESTED and isinstance(value, Mapping):
            for name, item in value.items():
                out[_NESTED[key] + str(name)] = _scalar(f"{key}.{name}", item)
        elif key == "programs" and isinstance(value, list):
            out[key] = ",".join(_scalar(key, v) for v in value)
        else:
            out[key] = _scalar(key, value)
    return out
