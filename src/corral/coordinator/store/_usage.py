"""What a job's finished tasks used, for SQLStore (_sql.py): the figures `corral show JOB`
summarises, and the peak `min_memory=auto` sizes the job's remaining tasks by
(scheduler.auto_memory). Every attempt's result keeps its peak memory and CPU seconds in the
task's row; a task queued again for a retry keeps its last attempt's, which counts too.

Leasing a requirement class with `min_memory=auto` goes job by job (`class_jobs`): the jobs
with queued tasks of the class whose peak the worker can hold. Taking the class's oldest rows
and dropping the misfits would let one job's tasks, too big for this worker, hide another
job's behind them."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..scheduler import AUTO
from ._rows import class_requires
from ._sqlbase import SQLBase

__all__ = ["UsageSQL"]

_CLASS_JOBS = "SELECT DISTINCT job_id FROM tasks WHERE status = 'queued' AND requires = ?"
# MAX skips NULLs on both backends: a job with no measured peak has none (NULL)
_PEAK = "SELECT MAX(peak_memory) FROM tasks WHERE job_id = ?"
_FINISHED = (
    "SELECT peak_memory, cpu_seconds FROM tasks WHERE job_id = ?"
    " AND status IN ('succeeded', 'failed')"
    " AND (peak_memory IS NOT NULL OR cpu_seconds IS NOT NULL)"
)


class UsageSQL(SQLBase):
    """A part of SQLStore."""

    def job_peaks(self, job_ids: Iterable[str]) -> dict[str, int | None]:
        """The highest peak memory (bytes) any attempt of each job reached; None for a job
        with no measured one yet."""
        out: dict[str, int | None] = {}
        for job_id in set(job_ids):
            row = self._db.execute(self._q(_PEAK), (job_id,)).fetchone()
            out[job_id] = None if row is None or row[0] is None else int(row[0])
        return out

    def class_jobs(
        self, key: str, job_id: str | None, peak_fits: Callable[[int | None], bool]
    ) -> list[str | None]:
        """Whose tasks of requirement class `key` to lease (a class text, `requires_key`):
        [job_id] (None: any job's) for most classes; for `min_memory=auto`, each job of the
        class (or only `job_id`) whose peak `peak_fits` accepts."""
        if class_requires(key).get("min_memory") != AUTO:
            return [job_id]
        if job_id is not None:
            jobs = [job_id]
        else:
            jobs = [r[0] for r in self._db.execute(self._q(_CLASS_JOBS), (key,)).fetchall()]
        peaks = self.job_peaks(jobs)
        return [job for job in sorted(jobs) if peak_fits(peaks[job])]

    def finished_usage(self, job_id: str) -> list[tuple[int | None, float | None]]:
        """Peak memory and CPU seconds of each finished task of a job that has either."""
        rows = self._db.execute(self._q(_FINISHED), (job_id,)).fetchall()
        return [(r[0], r[1]) for r in rows]
