"""The Python API: everything clients need to talk to a coordinator."""

from ._client import Client, input_files, sha256_file
from ._config import Target, config_path, read_config, resolve, write_config
from ._errors import ApiError, ConfigError, CorralError, NotFoundError, Unreachable

__all__ = [
    "ApiError",
    "Client",
    "ConfigError",
    "CorralError",
    "NotFoundError",
    "Target",
    "Unreachable",
    "config_path",
    "input_files",
    "read_config",
    "resolve",
    "sha256_file",
    "write_config",
]
