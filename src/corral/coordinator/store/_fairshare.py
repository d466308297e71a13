"""Fair share in the store, for SQLStore (_sql.py): owners' weights, caps and usage; the
lease's candidates, read owner by owner (each owner's best few of a requirement class, by
priority then age, one index walk each); and the facts the lease hands to fairshare.choose.

Usage is charged when an attempt ends (a result, or a lease that ran out): its slots times
the seconds it ran, added per owner to the `owners` row after decaying what the row held to
now, in one upsert. The arithmetic is in that statement, so coordinators sharing a
PostgreSQL database each add their part to the row as it stands, under its row lock, and no
charge is lost; a coordinator whose clock is behind the row's never grows it by decaying
backwards (GREATEST of the times). Reading decays to now without writing.

A cap holds within each lease's transaction. Coordinators sharing PostgreSQL lease at once
without waiting for each other (the queue's rows are claimed with SKIP LOCKED, owners are not
locked), so two leases at the same instant may each fill what they see left under a cap, and
pass it by what the other took then; the next leases see both and stop.

Rejected: a usage row per finished attempt summed at lease time (the table only grows, and
the lease would sum it every time).

The methods starting with `_` run inside a transaction the store has already opened.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import Any

from ..fairshare import HALF_LIFE, Candidate, Owner, decayed
from ._sqlbase import SQLBase

__all__ = ["FairShareSQL"]

# The owners with queued tasks of one requirement class, one index seek each (tasks_fair),
# with their rows (NULLs for an owner with none), in the lease's one statement for both.
_QUEUED_OWNERS = (
    "WITH RECURSIVE o(n) AS ("
    " SELECT (SELECT owner FROM tasks WHERE status = 'queued' AND requires = ?"
    " ORDER BY owner LIMIT 1)"
    " UNION ALL SELECT (SELECT owner FROM tasks WHERE status = 'queued' AND requires = ?"
    " AND owner > o.n ORDER BY owner LIMIT 1) FROM o WHERE o.n IS NOT NULL"
    ") SELECT o.n, w.share, w.max_slots, w.used, w.used_at FROM o"
    " LEFT JOIN owners w ON w.owner = o.n WHERE o.n IS NOT NULL"
)
# One owner's (or one job's) ready tasks of one class, in the order fair share takes them.
_LEASE = (
    "SELECT id, job_id, {spec}, attempts, created, seq, priority, owner FROM tasks"
    " WHERE status = 'queued' AND requires = ? AND waiting = 0"
    " AND (not_before IS NULL OR not_before <= ?)"
)
_LEASE_OWNER = _LEASE + " AND owner = ? ORDER BY priority DESC, created, seq LIMIT ?{lock}"
_LEASE_JOB = _LEASE + " AND job_id = ? ORDER BY priority DESC, created, seq LIMIT ?{lock}"
_OWNER_ROWS = "SELECT owner, share, max_slots, used, used_at FROM owners WHERE owner {ids}"
_ALL_OWNERS = "SELECT owner, share, max_slots, used, used_at FROM owners"
# slots held (a task blocked on its children gives its slots back) and slot-seconds so far
_RUNNING = (
    "SELECT owner, SUM(cost * (1 - blocked)), SUM(cost * (? - started)) FROM tasks"
    " WHERE status = 'running' AND owner {ids} GROUP BY owner"
)
# parameters: owner, slot-seconds, now, half-life
_CHARGE = (
    "INSERT INTO owners (owner, used, used_at) VALUES (?, ?, ?) ON CONFLICT (owner)"
    " DO UPDATE SET used = owners.used"
    " * power(0.5, {greatest}(excluded.used_at - owners.used_at, 0) / ?) + excluded.used,"
    " used_at = {greatest}(owners.used_at, excluded.used_at)"
)
_SET = (
    "INSERT INTO owners (owner, share, max_slots) VALUES (?, ?, ?) ON CONFLICT (owner)"
    " DO UPDATE SET share = excluded.share, max_slots = excluded.max_slots"
)


class FairShareSQL(SQLBase):
    """A part of SQLStore."""

    # how fast usage fades: set by the coordinator (`--fair-share-half-life`)
    fair_share_half_life: float = HALF_LIFE

    def set_owner_share(self, owner: str, share: float | None, max_slots: int | None) -> None:
        """Give an owner a share (weight) and a cap on running slots; None keeps what it
        had, a cap of 0 lifts it."""
        with self._tx():
            rows = self._run_listed(_OWNER_ROWS, [owner])
            had_share, had_cap = (rows[0][1], rows[0][2]) if rows else (1.0, None)
            cap = had_cap if max_slots is None else (max_slots or None)
            self._db.execute(self._q(_SET), (owner, had_share if share is None else share, cap))

    def owner_shares(self) -> dict[str, tuple[float, int | None]]:
        """Each owner with a row: its share and cap."""
        return {r[0]: (float(r[1]), r[2]) for r in self._db.execute(self._q(_ALL_OWNERS))}

    def fair_share(self, now: float, owners: Iterable[str] | None = None) -> dict[str, Owner]:
        """What fair share knows of these owners (default: those with queued tasks, found
        class by class with an index seek each, however deep the queue)."""
        if owners is None:
            classes = self._queued_classes()  # _sql.py
            owners = sorted({row[0] for key in classes for row in self._queued_owners(key)})
        return self._owners(list(owners), now)

    @abc.abstractmethod
    def _queued_classes(self) -> list[str]:
        """The requirement classes with queued tasks."""

    def _queued_owners(self, key: str) -> list[Any]:
        """(owner, share, max_slots, used, used_at) of each owner with queued tasks of `key`."""
        return list(self._db.execute(self._q(_QUEUED_OWNERS), (key, key)).fetchall())

    def _owner_rows(self, names: Sequence[str]) -> dict[str, Any]:
        """The owners' rows, by name (none for an owner without one)."""
        return {r[0]: r for r in self._run_listed(_OWNER_ROWS, list(names))}

    def _owners(
        self, names: Sequence[str], now: float, rows: dict[str, Any] | None = None
    ) -> dict[str, Owner]:
        """Owners' facts as of `now`: decayed usage plus their running attempts' so far."""
        rows = self._owner_rows(names) if rows is None else rows
        running = {r[0]: (int(r[1]), float(r[2])) for r in self._run_listed(_RUNNING, names, now)}
        out: dict[str, Owner] = {}
        for name in names:
            row = rows.get(name)
            share, cap, used, at = (1, None, 0, now) if row is None or row[1] is None else row[1:]
            slots, so_far = running.get(name, (0, 0.0))
            usage = decayed(float(used), now - float(at), self.fair_share_half_life) + so_far
            out[name] = Owner(name, usage, float(share), slots, cap)
        return out

    def _charge(self, ended: Iterable[tuple[str, int, float | None]], now: float) -> None:
        """Charge owners for attempts that ended now: (owner, slots, started) each."""
        per_owner: dict[str, float] = {}
        for owner, cost, started in ended:
            if started is not None:
                per_owner[owner] = per_owner.get(owner, 0.0) + cost * max(now - started, 0.0)
        half_life = self.fair_share_half_life
        rows = [(owner, used, now, half_life) for owner, used in sorted(per_owner.items())]
        if rows:  # sorted: coordinators sharing a database lock owners' rows in one order
            self._many(_CHARGE, rows)

    def _candidates(
        self, key: str, cost: int, job: str | None, limit: int, now: float, known: dict[str, Any]
    ) -> list[Candidate[Any]]:
        """Up to `limit` leasable tasks of class `key` of each owner with some (`job`: of
        that job only), best first; the owners' rows read on the way go in `known`."""
        if job is None:
            owners = self._queued_owners(key)  # _fairshare.py
            known.update((row[0], row) for row in owners)
            each = [(key, now, row[0], limit) for row in owners]
            sql = self._q(_LEASE_OWNER)
        else:
            each, sql = [(key, now, job, limit)], self._q(_LEASE_JOB)
        out: list[Candidate[Any]] = []
        for args in each:
            rows = self._db.execute(sql, args).fetchall()
            out += [Candidate(r[7], r[6], r[4], r[5], cost, r) for r in rows]
        return out

    def _lease_facts(
        self, candidates: Sequence[Candidate[Any]], now: float, known: dict[str, Any]
    ) -> dict[str, Owner]:
        """What fair share needs to know of the candidates' owners (their rows from `known`,
        else read); nothing when one owner with no cap has them all (the order within an
        owner is then the whole decision)."""
        names = sorted({c.owner for c in candidates})
        if not names:
            return {}
        rows = known if known.keys() >= set(names) else self._owner_rows(names)
        if len(names) == 1 and (names[0] not in rows or rows[names[0]][2] is None):
            return {}
        return self._owners(names, now, rows)
