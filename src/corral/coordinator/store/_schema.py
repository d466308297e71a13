"""The store's tables and indexes, written once for every backend.

The `{words}` are column types the dialect supplies (dialect.py): `{real}` a float, `{blob}`
bytes, `{serial}` a key that only grows (events and audit are never deleted, so each new seq
is the largest yet), `{bytewise}` text compared byte by byte. Every statement is idempotent:
opening an existing data directory creates what it lacks.
"""

from __future__ import annotations

__all__ = ["ADDED_COLUMNS", "INDEXES", "SCHEMA_VERSION", "TABLES", "VERSION_TABLE"]

# The schema this code writes and reads. Raise it with every change to TABLES, ADDED_COLUMNS
# or INDEXES; a coordinator refuses a database recorded at a higher one (a newer coordinator
# shares it, and this one would misread its rows).
SCHEMA_VERSION = 4
# one row: the version the database was last created or migrated to
VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"

TABLES = (
    """CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL,
    created {real} NOT NULL, total INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
    spec {blob} NOT NULL, requires {bytewise} NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL, worker_id TEXT, lease_id TEXT, lease_expires {real},
    exit_code INTEGER, error TEXT, stdout TEXT, stderr TEXT, manifest {blob},
    created {real} NOT NULL, started {real}, finished {real}
)""",
    """CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, slots INTEGER NOT NULL, status TEXT NOT NULL,
    capabilities {blob} NOT NULL, registered {real} NOT NULL, last_heartbeat {real} NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS events (
    seq {serial}, job_id TEXT NOT NULL, task_id TEXT NOT NULL,
    status TEXT NOT NULL, exit_code INTEGER, time {real} NOT NULL
)""",
    # dependencies (_deps.py): one row per (task, dependency)
    """CREATE TABLE IF NOT EXISTS deps (
    task_id TEXT NOT NULL, dep_id TEXT NOT NULL, PRIMARY KEY (task_id, dep_id)
)""",
    # identities, ownership and audit (_identity.py)
    """CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, owner TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE, created {real} NOT NULL, expires {real},
    revoked {real}, job_id TEXT
)""",
    "CREATE TABLE IF NOT EXISTS worker_owners (worker_id TEXT PRIMARY KEY, owner TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS blob_owners (
    owner TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (owner, sha256)
)""",
    """CREATE TABLE IF NOT EXISTS audit (
    seq {serial}, time {real} NOT NULL, actor TEXT NOT NULL,
    token_id TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL
)""",
    # the executable allowlist (_allowlist.py)
    """CREATE TABLE IF NOT EXISTS allowlist (
    sha256 TEXT PRIMARY KEY, note TEXT NOT NULL, added {real} NOT NULL, added_by TEXT NOT NULL,
    allow_inline INTEGER NOT NULL DEFAULT 0
)""",
    # speculative execution (_backups.py): a running task's second live lease, on another
    # worker; at most one row a task
    """CREATE TABLE IF NOT EXISTS backups (
    task_id TEXT PRIMARY KEY, lease_id TEXT NOT NULL, worker_id TEXT NOT NULL,
    lease_expires {real} NOT NULL, started {real} NOT NULL
)""",
    # checkpoints (_checkpoints.py): the last few saved by each task, numbered per task
    """CREATE TABLE IF NOT EXISTS checkpoints (
    task_id TEXT NOT NULL, n INTEGER NOT NULL, attempt INTEGER NOT NULL,
    created {real} NOT NULL, size BIGINT NOT NULL, files {blob} NOT NULL,
    bad INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (task_id, n)
)""",
    # evictions asked of running tasks (_evictions.py): for the attempt holding `lease_id`,
    # on `worker_id`; `kill`: it ends killed once given back, else it is requeued
    """CREATE TABLE IF NOT EXISTS evictions (
    task_id TEXT PRIMARY KEY, lease_id TEXT NOT NULL, worker_id TEXT NOT NULL,
    kill INTEGER NOT NULL, asked {real} NOT NULL
)""",
    # what every coordinator sharing the database must agree on (_shared.py): the key that
    # signs job tokens, the admin token, the TLS CA; made by the first, read by the rest
    # fair share (_fairshare.py): each owner's weight, cap on running slots, and usage in
    # slot-seconds as of `used_at` (decayed with the half-life when charged or read)
    """CREATE TABLE IF NOT EXISTS owners (
    owner TEXT PRIMARY KEY, share {real} NOT NULL DEFAULT 1, max_slots INTEGER,
    used {real} NOT NULL DEFAULT 0, used_at {real} NOT NULL DEFAULT 0
)""",
    "CREATE TABLE IF NOT EXISTS shared (name TEXT PRIMARY KEY, value {blob} NOT NULL)",
    # blobs kept in the database (blobs/database.py), in chunks; the blobs row is written
    # last, in the same transaction, so a blob listed there is whole
    "CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS blob_chunks (
    sha256 TEXT NOT NULL, n INTEGER NOT NULL, data {blob} NOT NULL, PRIMARY KEY (sha256, n)
)""",
)

# Task columns added after the first release, to a data directory that lacks them.
_ADDED_TASK_COLUMNS = (
    ("cost", "INTEGER NOT NULL DEFAULT 1"),  # slots the task takes
    ("not_before", "{real}"),  # a retry waiting out its backoff
    ("waiting", "INTEGER NOT NULL DEFAULT 0"),  # dependencies yet to succeed (_deps.py)
    ("blocked", "INTEGER NOT NULL DEFAULT 0"),  # running, waiting on its children
    # what the last attempt used, measured in its cgroup: bytes (past 32 bits), seconds
    ("peak_memory", "BIGINT"),
    ("cpu_seconds", "{real}"),
    ("name", "TEXT NOT NULL DEFAULT ''"),  # the spec's name: tasks of one name are a phase
    ("backed_up", "INTEGER NOT NULL DEFAULT 0"),  # it got a backup attempt (never another)
    # fair share leases owner by owner, and each owner's tasks by priority (_fairshare.py)
    ("owner", "TEXT NOT NULL DEFAULT ''"),  # its job's
    ("priority", "INTEGER NOT NULL DEFAULT 0"),  # its own, else its job's; higher first
)

# Columns added after the first release, by table.
ADDED_COLUMNS = {
    "tasks": _ADDED_TASK_COLUMNS,
    "jobs": (
        ("speculative", "INTEGER NOT NULL DEFAULT 0"),  # backups for stragglers
        ("priority", "INTEGER NOT NULL DEFAULT 0"),  # its tasks' unless they set their own
    ),
}

INDEXES = (
    "CREATE INDEX IF NOT EXISTS tasks_job ON tasks(job_id, seq)",
    "CREATE INDEX IF NOT EXISTS tasks_job_status ON tasks(job_id, status)",
    # The queue, one index for its three readers: the lease walks one requirement class's
    # ready tasks (waiting = 0) of one owner in (priority DESC, created, seq) order and stops
    # after LIMIT rows, however deep the queue; QUEUED_CLASSES seeks from one class to the
    # next on its first column, QUEUED_OWNERS from one owner of a class to the next.
    "CREATE INDEX IF NOT EXISTS tasks_fair ON tasks(requires, owner, waiting, priority DESC,"
    " created, seq) WHERE status = 'queued'",
    # the indexes tasks_fair replaced, which backends once had different sets of
    "DROP INDEX IF EXISTS tasks_queued",
    "DROP INDEX IF EXISTS tasks_queue",
    "DROP INDEX IF EXISTS tasks_ready",
    "CREATE INDEX IF NOT EXISTS tasks_running ON tasks(lease_expires) WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS tasks_worker ON tasks(worker_id) WHERE status = 'running'",
    # retries waiting out a backoff, found without walking the whole queue
    "CREATE INDEX IF NOT EXISTS tasks_retry ON tasks(not_before)"
    " WHERE status = 'queued' AND not_before IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq)",
    "CREATE INDEX IF NOT EXISTS deps_dep ON deps(dep_id)",
    "CREATE INDEX IF NOT EXISTS backups_worker ON backups(worker_id)",
    "CREATE INDEX IF NOT EXISTS evictions_worker ON evictions(worker_id)",
)
