"""Durable state backends behind one Store interface."""

from .base import (
    Leased,
    NewTask,
    NotFound,
    Outcome,
    SchemaTooNew,
    Stopped,
    Store,
    TaskSpan,
    TokenRecord,
    job_status,
)
from .postgres import PostgresStore
from .sqlite import SQLiteStore

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(spec: str) -> Store:
    """A `postgresql://` or `postgres://` URL opens PostgreSQL; anything else is a SQLite path."""
    if spec.lower().startswith(_POSTGRES_SCHEMES):
        return PostgresStore(spec)
    return SQLiteStore(spec)


__all__ = [
    "Leased",
    "NewTask",
    "NotFound",
    "Outcome",
    "PostgresStore",
    "SQLiteStore",
    "SchemaTooNew",
    "Stopped",
    "Store",
    "TaskSpan",
    "TokenRecord",
    "job_status",
    "open_store",
]
