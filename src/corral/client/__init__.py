"""The Python API: everything clients need to talk to a coordinator."""

from ._async import AsyncClient
from ._client import Client, input_files, sha256_file
from ._config import Target, config_path, read_config, resolve, write_config
from ._current import JobClient, current
from ._dispatch import AsyncTaskFuture, TaskFuture
from ._errors import ApiError, ConfigError, CorralError, NotFoundError, Unreachable
from ._executor import Executor
from ._functions import RemoteError, RemoteTraceback, SerializationError, TaskFailed
from ._joblib import register_joblib

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncTaskFuture",
    "Client",
    "ConfigError",
    "CorralError",
    "Executor",
    "JobClient",
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
    "read_config",
    "register_joblib",
    "resolve",
    "sha256_file",
    "write_config",
]
