"""The provider base: what every way of starting workers shares (issue 16).

A provider is built from `corral server --scale KIND:k=v,k=v` (`parse_scale`), tells the pure
policy what its workers offer and how far it may grow (`policy`, a `scaling.Provider`), and
does the I/O the autoscaler asks of it:

    launch(start) -> handle   start one worker that joins with `start` (its name is the
                              launch id, so the joined worker is matched to its launch); the
                              handle (a pid, a job id, a node id) is what `stop` needs
    stop(handle)              the worker drained and left, or its launch was given up: make
                              sure it is gone and clean up (kill, stop script, scancel, destroy)
    exited(handle)            optional: why a launch already failed (its process exited), or
                              None; the autoscaler then gives it up without waiting
    close()                   the coordinator stops

Options common to every kind (`COMMON`): min, max, idle_timeout, max_launches, join_timeout,
startup, slots, labels (`labels=gpu=yes;site=lab`), memory, name (the provider's name is
`KIND:NAME`, or `KIND` alone), url (the coordinator URL its workers use, when not the one the
coordinator knows itself by). A kind lists its own in `OPTIONS` and reads them from
`self.extra` in `check`; an unknown option is a `ScaleError` naming it.

Each provider has a directory of its own (`state_dir`, under the coordinator's data
directory) for logs and scripts. Launch, stop and exited raise `ProviderError` with one line
saying what went wrong; the autoscaler counts the launch as failed and shows the line in
`corral scale`.
"""

from __future__ import annotations

import abc
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

from ...protocol import parse_duration, parse_size
from ..scaling import Offer, Provider

__all__ = [
    "COMMON",
    "ProviderError",
    "ScaleError",
    "ScaleOptions",
    "ScaleSpec",
    "Start",
    "WorkerProvider",
    "environ",
    "parse_scale",
]

COMMON = frozenset(
    {"min", "max", "idle_timeout", "max_launches", "join_timeout", "startup"}
    | {"slots", "labels", "memory", "name", "url"}
)
_DURATIONS = ("idle_timeout", "join_timeout", "startup")
_COUNTS = ("min", "max", "max_launches", "slots")


class ScaleError(ValueError):
    """A `--scale` value that cannot be used; its text is one line for the CLI."""


class ProviderError(RuntimeError):
    """A provider could not launch or stop a worker; its text is one line."""


@dataclass(frozen=True)
class ScaleOptions:
    """The common options of one `--scale` value, checked; `extra` the kind's own, as text."""

    min: int = 0
    max: int = 4
    idle_timeout: float = 300.0
    max_launches: int = 4
    join_timeout: float = 600.0
    startup: float = 60.0
    slots: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    memory: int | None = None
    name: str = ""
    url: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScaleSpec:
    """One `--scale KIND:OPTIONS` value, parsed: the kind and its options."""

    kind: str
    options: ScaleOptions

    @property
    def name(self) -> str:
        """The provider's name in the policy, `corral scale` and metrics: `KIND[:NAME]`."""
        return f"{self.kind}:{self.options.name}" if self.options.name else self.kind


@dataclass(frozen=True)
class Start:
    """What one launched worker needs to join: minted by the autoscaler per launch.

    `token` is a worker token made for this launch alone; it expires soon after the launch's
    `join_timeout` unless its worker joined, and is revoked when the worker is stopped. `join`
    is a join string (CORRAL_JOIN for `corral worker`) when the coordinator serves TLS with a
    CA to pin, else None and the worker uses `url` with CORRAL_TOKEN.
    """

    launch_id: str
    url: str
    token: str
    join: str | None
    slots: int
    labels: Mapping[str, str]

    def worker_args(self) -> list[str]:
        """`corral worker`'s arguments; the token and join string (which holds the token) go
        in `env`, never on argv, where any local user could read them."""
        args = [] if self.join else ["--server", self.url]
        args += ["--name", self.launch_id, "--slots", str(self.slots)]
        for key, value in sorted(self.labels.items()):
            args += ["--label", f"{key}={value}"]
        return args

    def env(self) -> dict[str, str]:
        """What a start script or worker is given in its environment."""
        env = {
            "CORRAL_LAUNCH_ID": self.launch_id,
            "CORRAL_URL": self.url,
            "CORRAL_SLOTS": str(self.slots),
            "CORRAL_LABELS": ";".join(f"{k}={v}" for k, v in sorted(self.labels.items())),
            "CORRAL_WORKER_ARGS": shlex.join(self.worker_args()),
            **self.secret_env(),
        }
        return env

    def secret_env(self) -> dict[str, str]:
        """The one variable that lets the worker in: CORRAL_JOIN, or CORRAL_TOKEN."""
        return {"CORRAL_JOIN": self.join} if self.join else {"CORRAL_TOKEN": self.token}

    def shell(self, corral: str = "corral") -> str:
        """One shell line that runs the worker in the foreground (a remote shell, cloud-init,
        a batch script); its secret is set in the environment, never on argv."""
        ((key, value),) = self.secret_env().items()
        args = shlex.join(self.worker_args())
        return f"{key}={shlex.quote(value)} exec {shlex.quote(corral)} worker {args}"


def _split_options(kind: str, text: str) -> dict[str, str]:
    """`k=v,k=v`; an item with no `=` continues the value before it, so a list can be written
    as it reads (`hosts=h1,h2,user=me`: hosts is `h1,h2`)."""
    out: dict[str, str] = {}
    last = ""
    for item in text.split(",") if text else ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep and last and key:
            out[last] += "," + key
            continue
        if not sep or not key:
            raise ScaleError(f"--scale {kind}: {item!r} must look like KEY=VALUE")
        if key in out:
            raise ScaleError(f"--scale {kind}: {key} is given twice")
        out[key] = value.strip()
        last = key
    return out


def _labels(kind: str, text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ScaleError(f"--scale {kind}: label {item!r} must look like KEY=VALUE")
        labels[key] = value
    return labels


def _count(text: str, least: int) -> int:
    if not text.isdigit():
        raise ValueError("not a whole number")
    if int(text) < least:
        raise ValueError(f"at least {least}")
    return int(text)


def _seconds(text: str) -> float:
    return parse_duration(text + "s" if text.isdigit() else text)


_PARSERS: dict[str, Callable[[str], object]] = {
    **dict.fromkeys(_DURATIONS, _seconds),
    **{key: partial(_count, least=int(key in ("slots", "max_launches"))) for key in _COUNTS},
    "memory": parse_size,
}


def _common(kind: str, raw: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, parse in _PARSERS.items():
        if key in raw:
            try:
                out[key] = parse(raw[key])
            except ValueError as exc:
                raise ScaleError(f"--scale {kind}: {key}={raw[key]!r}: {exc}") from exc
    if "labels" in raw:
        out["labels"] = _labels(kind, raw["labels"])
    for key in ("name", "url"):
        if key in raw:
            out[key] = raw[key]
    return out


def parse_scale(text: str, kinds: Mapping[str, frozenset[str]]) -> ScaleSpec:
    """`KIND:k=v,k=v` checked against `kinds` (kind -> its own option names); ScaleError with
    one line saying what is wrong and how to write it."""
    kind, _, rest = text.strip().partition(":")
    if kind not in kinds:
        known = ", ".join(sorted(kinds))
        raise ScaleError(f"--scale {text!r}: unknown provider {kind!r}; use one of {known}")
    raw = _split_options(kind, rest)
    unknown = sorted(set(raw) - COMMON - kinds[kind])
    if unknown:
        if ":" in unknown[0]:
            hint = "; give each provider its own --scale"
        else:
            hint = f"; {kind} takes {', '.join(sorted(COMMON | kinds[kind]))}"
        raise ScaleError(f"--scale {kind}: unknown option {unknown[0]!r}{hint}")
    extra = {k: v for k, v in raw.items() if k in kinds[kind]}
    options = ScaleOptions(**_common(kind, raw), extra=extra)  # type: ignore[arg-type]
    if options.min > options.max:
        raise ScaleError(f"--scale {kind}: min={options.min} is more than max={options.max}")
    return ScaleSpec(kind, options)


class WorkerProvider(abc.ABC):
    """One way of starting workers; one subclass per kind, in its own file."""

    kind: ClassVar[str]
    #: the kind's own option names (beyond COMMON)
    OPTIONS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: ScaleSpec, state_dir: Path) -> None:
        self.name = spec.name
        self.state_dir = state_dir  # the provider's own files (logs, scripts); made on use
        self.options = spec.options
        self.extra = spec.options.extra
        self.check()

    def check(self) -> None:  # noqa: B027 - a kind with no options of its own checks nothing
        """Check the kind's own options (`self.extra`); raise ScaleError with one line."""

    def require(self, key: str) -> str:
        """A kind's option that must be given."""
        value = self.extra.get(key, "")
        if not value:
            raise ScaleError(f"--scale {self.kind}: give {key}=...")
        return value

    @property
    def offer(self) -> Offer:
        """What a worker this provider starts offers."""
        return Offer(self.options.slots, dict(self.options.labels), self.options.memory)

    @property
    def policy(self) -> Provider:
        """The provider as the pure policy sees it: its offer and limits."""
        o = self.options
        return Provider(
            name=self.name,
            offer=self.offer,
            max=o.max,
            min=o.min,
            idle_timeout=o.idle_timeout,
            max_launches=o.max_launches,
            join_timeout=o.join_timeout,
            startup=o.startup,
        )

    @abc.abstractmethod
    async def launch(self, start: Start) -> str:
        """Start one worker that joins with `start`; a handle for `stop` (ProviderError)."""

    @abc.abstractmethod
    async def stop(self, handle: str) -> None:
        """Make sure the worker of `handle` is gone and clean up after it."""

    async def exited(self, handle: str) -> str | None:
        """Why the launch of `handle` failed already (it will never join), or None."""
        return None

    async def close(self) -> None:  # noqa: B027 - most kinds hold nothing open
        """The coordinator is stopping; release what the provider holds."""


def environ(start: Start) -> dict[str, str]:
    """This process's environment with what a launched worker or script is told."""
    return {**os.environ, **start.env()}
