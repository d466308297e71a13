"""Ways of starting workers for the autoscaler (issue 16): base.py and one file per kind.

A kind's module is imported when a `--scale` value names it, so an optional driver
(apache-libcloud, asyncssh) is needed only by those who use it; a kind's module must itself
import without its driver and say how to install it when it is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from .base import (
    COMMON,
    ProviderError,
    ScaleError,
    ScaleOptions,
    ScaleSpec,
    Start,
    WorkerProvider,
    environ,
    parse_scale,
)

__all__ = [
    "COMMON",
    "KINDS",
    "ProviderError",
    "ScaleError",
    "ScaleOptions",
    "ScaleSpec",
    "Start",
    "WorkerProvider",
    "build_provider",
    "build_providers",
    "environ",
    "parse_scale",
    "provider_class",
]

#: kind -> module in this package holding its class
KINDS = {
    "local": "local",
    "command": "command",
    "ssh": "ssh",
    "slurm": "slurm",
    "libcloud": "libcloud",
}


def provider_class(kind: str) -> type[WorkerProvider]:
    """The class of one kind; ScaleError when the kind is unknown or not written yet."""
    if kind not in KINDS:
        raise ScaleError(f"unknown provider {kind!r}; use one of {', '.join(sorted(KINDS))}")
    try:
        module = importlib.import_module(f".{KINDS[kind]}", __name__)
    except ModuleNotFoundError as exc:
        raise ScaleError(f"provider {kind!r} is not available: {exc}") from exc
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, WorkerProvider):
            if getattr(value, "kind", None) == kind:
                return value
    raise ScaleError(f"provider {kind!r} is not available")  # pragma: no cover


def build_provider(text: str, data_dir: Path) -> WorkerProvider:
    """A provider from one `--scale KIND:OPTIONS` value; ScaleError with one line."""
    kind = text.strip().partition(":")[0]
    if kind not in KINDS:
        parse_scale(text, dict.fromkeys(KINDS, frozenset()))  # raises: names the known kinds
    cls = provider_class(kind)
    spec = parse_scale(text, {kind: cls.OPTIONS})
    return cls(spec, data_dir / "scale" / spec.name.replace(":", "-"))


def build_providers(texts: Sequence[str], data_dir: Path) -> list[WorkerProvider]:
    """The providers of several `--scale` values; ScaleError when one is bad, or when two
    share a name (tell them apart with name=)."""
    providers = [build_provider(text, data_dir) for text in texts]
    names = [p.name for p in providers]
    for name in names:
        if names.count(name) > 1:
            raise ScaleError(f"--scale: two providers are called {name}; give one name=...")
    return providers
