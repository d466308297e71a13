"""One typed error that becomes one clear HTTP answer: {"error": code, "detail": message}."""

from __future__ import annotations

from ..protocol import ERROR_STATUS


class ApiError(Exception):
    """A request the coordinator refuses; `code` is one of protocol.ERROR_STATUS."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = ERROR_STATUS.get(code, 400)
