"""Fair share: whose queued tasks take the free slots a worker asks to fill. Pure, no I/O.

Facts in, for each owner with leasable work: its recent usage in slot-seconds (finished
attempts, charged when they finish and decayed with a half-life, plus what its running
attempts have used so far), its share (a weight, 1 by default), the slots it runs and its cap
on them; and the candidate tasks the store read, a few per owner and requirement class.
Decision out: the tasks to lease, in order.

The rule, applied slot by slot: the next task goes to the owner with the least usage per
share among those with a task that still fits (in the room left, and under the owner's cap);
a tie goes to the owner running fewer slots per share, then by name. Each task given in the
same decision counts `NOMINAL` slot-seconds more for its owner, so a request for several
slots spreads them between owners whose usage is about equal instead of handing them all to
whoever was lower by a hair. Within one owner: highest priority first, then oldest (created,
seq), across requirement classes, so no class of an owner starves another. A task too big for
the room left is passed over for a smaller one behind it, and a slot stays empty only when no
owner under its cap has a task that fits.

With weights 2:1 and both owners busy, the slot-seconds charged settle at 2:1: whichever
owner is below its share of the usage gets the next slot.

Rejected: a negotiation cycle (HTCondor's, every 60 s by default), which leaves slots idle
until the next cycle. The decision is made when a worker asks for work, from facts the store
reads in the lease's transaction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = [
    "HALF_LIFE",
    "NOMINAL",
    "Candidate",
    "Owner",
    "choose",
    "decayed",
    "fair_share_text",
    "prefetch",
    "ranked",
]

Row = TypeVar("Row")
HALF_LIFE = 3600.0  # seconds: `corral server --fair-share-half-life`
NOMINAL = 1.0  # slot-seconds a task given in this decision counts for its owner


def decayed(used: float, elapsed: float, half_life: float) -> float:
    """`used` slot-seconds recorded `elapsed` seconds ago, as they count now."""
    return used * math.pow(0.5, max(elapsed, 0.0) / half_life)


@dataclass(frozen=True)
class Owner:
    """What fair share knows of one owner."""

    name: str
    usage: float = 0.0  # decayed slot-seconds, running attempts' so far included
    share: float = 1.0  # weight: `corral token create --share`
    running: int = 0  # slots its running tasks take
    cap: int | None = None  # at most this many running slots (`--max-slots`)

    def key(self, extra: float = 0.0, taken: int = 0) -> tuple[float, float, str]:
        """Lower goes first: usage per share, then running slots per share, then name."""
        return ((self.usage + extra) / self.share, (self.running + taken) / self.share, self.name)

    def room(self, taken: int) -> float:
        """Slots it may still take, `taken` already given in this decision."""
        return math.inf if self.cap is None else self.cap - self.running - taken


@dataclass(frozen=True)
class Candidate(Generic[Row]):
    """A queued task the store could lease, with what orders it."""

    owner: str
    priority: int
    created: float
    seq: int
    cost: int  # slots it takes
    row: Row = field(compare=False)


def _order(c: Candidate[Row]) -> tuple[int, float, int]:
    return (-c.priority, c.created, c.seq)


def choose(
    owners: Mapping[str, Owner],
    candidates: Iterable[Candidate[Row]],
    capacity: int,
    nominal: float = NOMINAL,
) -> list[Row]:
    """The candidates to lease within `capacity` slots, in the order they were chosen. An
    owner missing from `owners` has no usage, share 1 and no cap."""
    queues: dict[str, list[Candidate[Row]]] = {}
    for c in sorted(candidates, key=_order):
        queues.setdefault(c.owner, []).append(c)
    facts = {name: owners.get(name) or Owner(name) for name in queues}
    if len(queues) == 1:  # one owner: its order is the whole decision (the common case)
        ((name, queue),) = queues.items()
        return _fill(queue, min(capacity, facts[name].room(0)))
    taken = dict.fromkeys(queues, 0)
    out: list[Row] = []
    room = capacity
    while room > 0 and queues:
        for name in list(queues):  # drop what can no longer fit, and owners left with none
            fit = min(room, facts[name].room(taken[name]))
            queues[name] = [c for c in queues[name] if c.cost <= fit]
            if not queues[name]:
                del queues[name]
        if not queues:
            break
        name = min(queues, key=lambda n: facts[n].key(nominal * taken[n], taken[n]))
        pick = queues[name].pop(0)
        out.append(pick.row)
        taken[name] += pick.cost
        room -= pick.cost
    return out


def prefetch(
    owners: Mapping[str, Owner],
    job: Sequence[Candidate[Row]],
    rivals: Iterable[Candidate[Row]],
    capacity: int,
) -> list[Row]:
    """What a worker may fetch ahead of its slots from one job (`job`: its candidates, all
    of one owner): nothing while a rival (another owner's next task, or its own owner's of
    higher priority) has the better claim, which is another owner using strictly less per
    share, or the higher priority; else the job's tasks as `choose` takes them."""
    if not job:
        return []
    me = owners.get(job[0].owner) or Owner(job[0].owner)
    best = max(c.priority for c in job)
    for c in rivals:
        other = owners.get(c.owner) or Owner(c.owner)
        if c.owner == me.name and c.priority > best:
            return []
        if c.owner != me.name and other.room(0) > 0 and other.key()[0] < me.key()[0]:
            return []
    return choose(owners, job, capacity)


def _fill(queue: Sequence[Candidate[Row]], room: float) -> list[Row]:
    """One owner's candidates, in order, that fit in `room` slots (a big one passed over)."""
    out: list[Row] = []
    for c in queue:
        if c.cost <= room:
            out.append(c.row)
            room -= c.cost
    return out


def ranked(owners: Iterable[Owner]) -> list[Owner]:
    """Owners in the order fair share serves them (the next free slot goes to the first)."""
    return sorted(owners, key=lambda o: o.key())


def _span(seconds: float) -> str:
    if seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return "hour" if hours == 1 else f"{hours} hours"
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return "minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds:g} seconds"


def fair_share_text(owner: str, waiting: Sequence[Owner], half_life: float) -> str | None:
    """In plain words, why `owner`'s queued tasks wait behind others' (`waiting`: every owner
    with queued work, `owner` among them, with their usage); None when nothing holds it back.
    """
    facts = {o.name: o for o in waiting}
    me = facts.get(owner) or Owner(owner)
    if me.cap is not None and me.running >= me.cap:
        return f"{owner} runs {me.running} slots, the most allowed (--max-slots {me.cap})"
    ahead = [o.name for o in ranked(facts.values()) if o.name != owner and o.key() < me.key()]
    ahead = [n for n in ahead if facts[n].room(0) > 0]
    if not ahead:
        return None
    total = sum(o.usage for o in facts.values())
    part = 100.0 * me.usage / total if total > 0 else 0.0
    names = ", ".join(ahead[:3]) + (f" and {len(ahead) - 3} more" if len(ahead) > 3 else "")
    return (
        f"{owner} has used {part:.0f}% of the farm in the last {_span(half_life)}"
        f" (share {me.share:g}); {names}'s tasks go first"
    )
