"""Matching tasks to workers: pure functions from facts to decisions, no I/O.

A task's `requires` is a flat map of strings. Known keys:
os, arch, min_cpus, min_memory, min_disk (sizes like 2G), gpus, cpus (slots the task takes,
default 1), programs (comma-separated names on PATH), python (a version spec: 3.11, >=3.10,
>=3.10,<3.13), sandbox (bwrap or none), network (yes: the worker gives tasks that ask
the network), label.NAME, env.NAME (a value, or * for "defined").

`min_memory=auto` sizes a job's tasks from its past: a task is placed only on a worker with at
least AUTO_MARGIN times the highest peak memory the job's finished tasks reached
(`auto_memory`); before any has finished, anywhere. The requirement class of such tasks
matches every worker (`fits`), and the store then keeps each job's tasks from the workers
`Matcher.peak_fits` refuses, with the job's peak read in the same transaction.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..protocol import Worker, parse_size, slots_needed

Check = Callable[[str, Mapping[str, object]], str | None]
AUTO = "auto"  # min_memory=auto: from the peaks of the job's finished tasks
AUTO_MARGIN = 1.2


def _num(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _size(value: object) -> float:
    try:
        return float(parse_size(str(value)))
    except ValueError:
        return 0.0


def _at_least(
    key: str, field: str, unit: str = "", amount: Callable[[object], float] = _num
) -> Check:
    def check(want: str, caps: Mapping[str, object]) -> str | None:
        if want == AUTO:  # placed by the job's peak (Matcher.peak_fits)
            return None
        have = amount(caps.get(field))
        if have < amount(want):
            return f"{key}={want} but worker has {have:g}{unit}"
        return None

    return check


def _equal(key: str) -> Check:
    def check(want: str, caps: Mapping[str, object]) -> str | None:
        have = caps.get(key)
        return None if str(have) == want else f"{key}={want} but worker has {have}"

    return check


def program_names(want: str) -> list[str]:
    """The program names in a `programs` requirement."""
    return [p.strip() for p in want.split(",") if p.strip()]


def _names(value: object) -> set[str]:
    """The names in a list (or the keys of a dict) a worker reported; anything else is none."""
    return {p for p in value if isinstance(p, str)} if isinstance(value, list | dict) else set()


def _programs(want: str, caps: Mapping[str, object]) -> str | None:
    names = _names(caps.get("programs"))
    lacking = [p for p in program_names(want) if p not in names]
    return f"lacks program {', '.join(lacking)}" if lacking else None


_VERSION_OPS = ("==", "!=", ">=", "<=", ">", "<", "")
_VERSION_RE = re.compile(r"\d+(\.\d+)*")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def _clause(clause: str) -> tuple[str, tuple[int, ...]]:
    clause = clause.strip()
    op = next(o for o in _VERSION_OPS if clause.startswith(o))
    number = clause[len(op) :].strip()
    if not _VERSION_RE.fullmatch(number):
        raise ValueError(f"{clause!r} is not a version clause like 3.11 or >=3.10")
    return op, _version(number)


def version_matches(spec: str, version: str) -> bool:
    """Whether `version` (3.11.4) satisfies `spec`: 3.11, ==3.11, >=3.10, or clauses with commas."""
    try:
        have = _version(version)
    except ValueError:
        return False
    for op, want in (_clause(c) for c in spec.split(",")):
        prefix = have[: len(want)]
        ok = {
            "": prefix == want,
            "==": prefix == want,
            "!=": prefix != want,
            ">=": have >= want,
            "<=": prefix <= want,
            ">": prefix > want,
            "<": have < want,
        }[op]
        if not ok:
            return False
    return True


def _python(want: str, caps: Mapping[str, object]) -> str | None:
    have = str(caps.get("python", ""))
    ok = bool(have) and version_matches(want, have)
    return None if ok else f"python={want} but worker has {have or 'unknown'}"


def _mapped(field: str, key: str, want: str, caps: Mapping[str, object]) -> str | None:
    table = caps.get(field)
    have = table.get(key) if isinstance(table, dict) else None
    if have is None:
        return f"{field} {key} is not set"
    if want != "*" and str(have) != want:
        return f"{field} {key}={have}, not {want}"
    return None


_CHECKS: dict[str, Check] = {
    "os": _equal("os"),
    "arch": _equal("arch"),
    "sandbox": _equal("sandbox"),
    "network": _equal("network"),
    "min_cpus": _at_least("min_cpus", "cpus"),
    "min_memory": _at_least("min_memory", "memory_free", " bytes free", _size),
    "min_disk": _at_least("min_disk", "disk_free", " bytes free", _size),
    "gpus": _at_least("gpus", "gpus"),
    "cpus": _at_least("cpus", "slots", " slot(s)"),
    "programs": _programs,
    "python": _python,
}


def _value_problem(key: str, value: str) -> str | None:
    if key in ("min_cpus", "gpus", "cpus") and not value.isdigit():
        return f"{key}={value!r} must be a whole number"
    if key == "cpus" and int(value) < 1:
        return "cpus must be at least 1"
    if key == "min_memory" and value == AUTO:
        return None
    if key in ("min_memory", "min_disk"):
        try:
            parse_size(value)
        except ValueError as exc:
            return f"{key}: {exc}"
    if key == "python":
        try:
            [_clause(c) for c in value.split(",")]
        except (ValueError, StopIteration) as exc:
            return f"python: {exc}"
    if key == "programs" and not program_names(value):
        return "programs names no program"
    return None


def requirement_problem(key: str, value: str | None = None) -> str | None:
    """Why a requirement (its key, and its value when given) is not understood, or None."""
    if key.startswith(("label.", "env.")):
        return None if key.partition(".")[2] else f"requirement {key!r} names nothing"
    if key not in _CHECKS:
        known = ", ".join(sorted(_CHECKS))
        return f"unknown requirement {key!r} (known: {known}, label.NAME, env.NAME)"
    return None if value is None else _value_problem(key, value)


def unmet(requires: Mapping[str, str], caps: Mapping[str, object]) -> list[str]:
    """Reasons a worker with `caps` cannot run a task with `requires` (empty: it can)."""
    return [why for key, want in requires.items() if (why := _unmet_one(key, want, caps))]


def _unmet_one(key: str, want: str, caps: Mapping[str, object]) -> str | None:
    if key.startswith("label."):
        return _mapped("labels", key[6:], want, caps)
    if key.startswith("env."):
        return _mapped("env", key[4:], want, caps)
    check = _CHECKS.get(key)
    return check(want, caps) if check else f"unknown requirement {key}"


def fits(requires: Mapping[str, str], caps: Mapping[str, object]) -> bool:
    """Whether a worker with `caps` may run a task with `requires`."""
    return not unmet(requires, caps)


def auto_memory(peak: int | None) -> int | None:
    """The free memory `min_memory=auto` asks of a worker, given the highest peak (bytes) of
    the job's finished tasks; None while none has finished with a measured peak."""
    return None if peak is None else math.ceil(peak * AUTO_MARGIN)


@dataclass(frozen=True)
class Matcher:
    """A worker's `fits`, as Store.lease takes it: its capabilities, and the slots it has (room
    may include prefetch, but one task never takes more slots than the worker has)."""

    caps: Mapping[str, object]
    slots: int

    def __call__(self, requires: Mapping[str, str]) -> bool:
        return slots_needed(requires) <= self.slots and fits(requires, self.caps)

    def peak_fits(self, peak: int | None) -> bool:
        """Whether a task with `min_memory=auto` of a job whose peak is `peak` may run here."""
        need = auto_memory(peak)
        return need is None or _size(self.caps.get("memory_free")) >= need


def programs_to_probe(
    classes: Iterable[Mapping[str, str]], caps: Mapping[str, object]
) -> list[str]:
    """Programs queued tasks need that this worker has not yet looked for on its PATH."""
    known = _names(caps.get("programs")) | _names(caps.get("programs_missing"))
    wanted = {p for req in classes for p in program_names(req.get("programs", ""))}
    return sorted(wanted - known)


def _phrase(key: str, want: str) -> str:
    if key == "programs":
        return f"has program {want}"
    if key.startswith("label."):
        return f"has label {key[6:]}={want}"
    if key.startswith("env."):
        name = key[4:]
        return f"exposes env {name}" if want == "*" else f"exposes env {name}={want}"
    if key == "cpus":
        return f"has {want} slots for a task with cpus={want}"
    return f"meets {key}={want}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _unprobed(requires: Mapping[str, str], workers: Sequence[Worker]) -> list[str]:
    return sorted({p for w in workers for p in programs_to_probe([requires], w.capabilities)})


def _unsatisfied(requires: Mapping[str, str], workers: Sequence[Worker]) -> str:
    n = len(workers)
    checked = f"({_plural(n, 'worker')} checked)"
    unprobed = _unprobed(requires, workers)
    if unprobed:
        return f"waiting for workers to look for program {', '.join(unprobed)} {checked}"
    failing = {
        key: sum(1 for w in workers if _unmet_one(key, want, w.capabilities))
        for key, want in requires.items()
    }
    key = max(failing, key=lambda k: failing[k])
    if failing[key] == n:
        return f"no connected worker {_phrase(key, requires[key])} {checked}"
    reasons = "; ".join(f"{w.name}: {', '.join(unmet(requires, w.capabilities))}" for w in workers)
    return f"no connected worker meets all requirements {checked}: {reasons}"


def never_met(requires: Mapping[str, str], workers: Sequence[Worker]) -> str | None:
    """In plain words, a requirement none of `workers` meets (`no worker has 2 slots for a
    task with cpus=2`), so none could ever run the task; None when one could, or when there
    is no worker to judge by. Programs a worker has not looked for yet are not held against
    it: it looks when such a task is queued."""
    judged = [{**w.capabilities, "slots": w.slots} for w in workers]
    if any(programs_to_probe([requires], caps) for caps in judged):
        requires = {k: v for k, v in requires.items() if k != "programs"}
    if not judged or any(fits(requires, caps) for caps in judged):
        return None
    for key, want in requires.items():
        if all(_unmet_one(key, want, caps) for caps in judged):
            return f"no worker {_phrase(key, want)}"
    return "no one worker meets all the requirements at once"


def pending_reason(
    requires: Mapping[str, str],
    workers: Sequence[Worker],
    now: float,
    not_before: float | None = None,
    fair_share: str | None = None,
) -> str:
    """In plain words, why a queued task with `requires` is not running yet; `fair_share`,
    why its owner's tasks wait behind others' (fairshare.fair_share_text), if they do."""
    if not_before is not None and not_before > now:
        return f"waiting {not_before - now:.0f} s before retrying a failed attempt"
    reason = _placement_reason(requires, workers)
    return reason if fair_share is None else f"{fair_share}; {reason}"


def _placement_reason(requires: Mapping[str, str], workers: Sequence[Worker]) -> str:
    online = [w for w in workers if w.status == "online"]
    if not online:
        draining = sum(1 for w in workers if w.status == "draining")
        extra = f" ({draining} draining)" if draining else ""
        idle = sum(1 for w in workers if w.status in ("idle-wait", "suspended"))
        extra += f" ({idle} waiting for their machine to be idle)" if idle else ""
        return f"no worker is connected{extra}"
    matching = [w for w in online if fits(requires, w.capabilities)]
    if not matching:
        return _unsatisfied(requires, online)
    need = slots_needed(requires)
    total = sum(w.slots for w in matching)
    free = [max(w.slots - w.slots_used, 0) for w in matching]
    if not any(free):
        return f"all {total} matching slots are busy ({_plural(len(matching), 'matching worker')})"
    if max(free) < need:
        return f"needs {need} free slots on one worker; at most {max(free)} are free on any"
    return f"next in line: {sum(free)} of {total} matching slots are free"
