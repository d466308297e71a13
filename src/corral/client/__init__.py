"""The Python API: everything clients need to talk to a coordinator."""

from ._async import AsyncClient
from ._client import Client, input_files, sha256_file
from ._config import Target, config_path, read_config, resolve, write_config
from ._current import JobClient, current
from ._errors import ApiError, ConfigError, CorralError, NotFoundError, Unreachable
from ._executor import Executor
from ._functions import RemoteError, RemoteTraceback, SerializationError, TaskFailed
from ._futures import AsyncTaskFuture, TaskFuture
from ._joblib import register_joblib
from ._join import Join, make_join, parse_join, pem_fingerprint, save_pinned_ca

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncTaskFuture",
    "Client",
    "ConfigError",
    "CorralError",
    "Executor",
    "JobClient",
    "Join",
    "NotFoundError",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "Target",
    "TaskFailed",
    "TaskFuture",
    "Unreachable",
    "config_path",
    "current",
    "input_files",
    "make_join",
    "parse_join",
    "pem_fingerprint",
    "read_config",
    "register_joblib",
    "resolve",
    "save_pinned_ca",
    "sha256_file",
    "write_config",
]
