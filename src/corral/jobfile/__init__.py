"""Building tasks from text, shared by `corral submit` and the coordinator's dashboard: job
files (TOML or JSON, errors with line and field), `--each-line` lines, `--limit` values.

Pure (no I/O) and below both users: it imports only corral.protocol, so the coordinator may
use it without importing the CLI.
"""

from ._each import BYTE_LIMITS, each_line_argv, limit_value, substitute, task_lines
from ._parse import MAX_TASKS, JobDraft, JobFileError, TaskDraft, guess_format, parse_jobfile

__all__ = [
    "BYTE_LIMITS",
    "MAX_TASKS",
    "JobDraft",
    "JobFileError",
    "TaskDraft",
    "each_line_argv",
    "guess_format",
    "limit_value",
    "parse_jobfile",
    "substitute",
    "task_lines",
]
