"""Errors the client raises.

CorralError
+-- ConfigError        no coordinator configured
+-- Unreachable        the coordinator did not answer (names the URL tried)
+-- ApiError           the coordinator refused: .status, .code, .detail
    +-- NotFoundError  404
"""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error the client raises."""


class ConfigError(CorralError):
    """No coordinator could be found, or the config file is unreadable."""


class Unreachable(CorralError):
    """The coordinator did not answer."""


class ApiError(CorralError):
    """The coordinator answered with an error."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{detail} ({code})")
        self.status = status
        self.code = code
        self.detail = detail


class NotFoundError(ApiError):
    """No such job, task, worker or blob."""
