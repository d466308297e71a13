"""Durable state backends behind one Store interface."""

from .base import Leased, NewTask, NotFound, Outcome, Stopped, Store, job_status
from .sqlite import SQLiteStore

__all__ = [
    "Leased",
    "NewTask",
    "NotFound",
    "Outcome",
    "SQLiteStore",
    "Stopped",
    "Store",
    "job_status",
]
