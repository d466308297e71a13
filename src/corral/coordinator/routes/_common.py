"""What every route module shares: the endpoint record, JSON responses, body decoding.

Bodies are decoded in one place (`decode_body`) into protocol structs; any failure there, and
every ApiError or NotFound raised by the service, becomes `{"error": code, "detail": message}`
(app.py installs the handlers). Integer query parameters are read in one place too
(`IntQuery`), each with its range, which the OpenAPI document shows.

A number outside its range, in a body or a query, is `invalid_argument` (422) naming the field
and the range; a body of the wrong shape is `invalid_body` (422); text that is not JSON, or a
query parameter that is not an integer, is `bad_request` (400).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ...protocol import INT64_MAX, range_problem
from ..errors import ApiError
from ..service import Coordinator

Handler = Callable[[Request, Coordinator, Any], Awaitable[Any]]
encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Endpoint:
    """One API operation; the handler's name is its operationId and its access-rule name."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: Any = None
    returns: Any = None
    status: int = 200
    query: tuple[IntQuery, ...] = ()  # its integer query parameters
    http_only: bool = False  # a blob's bytes in bulk: over HTTP only, not the channel


def json_response(value: Any, status: int = 200) -> Response:
    """Encode a struct, list or dict as JSON."""
    return Response(encoder.encode(value), status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) past `limit` bytes without reading further."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError("too_large", f"body of {declared} bytes exceeds {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_body(request: Request, coord: Coordinator, kind: Any) -> Any:
    """The request's JSON body as `kind`, or the ApiError that says what is wrong with it."""
    raw = await read_body(request, coord.settings.max_body_bytes)
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype != "application/json":
        raise ApiError("unsupported_media_type", f"send application/json, not {ctype}")
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        problem = range_problem(kind, exc)
        if problem is not None:
            raise ApiError("invalid_argument", problem) from exc
        raise ApiError("invalid_body", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise ApiError("bad_request", f"malformed JSON: {exc}") from exc


@dataclass(frozen=True)
class IntQuery:
    """An integer query parameter and its range: read by `read`, documented by openapi.py."""

    name: str
    default: int
    low: int
    high: int

    def read(self, request: Request, text: str | None = None) -> int:
        """Its value in `request` (or `text`, when given), `default` when absent."""
        if text is None:
            text = request.query_params.get(self.name)
        if text is None:
            return self.default
        try:
            value = int(text)
        except ValueError as exc:
            raise ApiError("bad_request", f"{self.name}: must be an integer") from exc
        if not self.low <= value <= self.high:
            raise ApiError("invalid_argument", f"{self.name}: {self.range_text()}")
        return value

    def range_text(self) -> str:
        """'must be an integer from LOW to HIGH', as body fields say it (protocol/_bounds.py)."""
        return f"must be an integer from {self.low} to {self.high}"


MAX_PAGE = 100_000  # rows in one page of a list
# byte offsets and event sequence numbers: a signed 64-bit file offset, PostgreSQL's BIGINT
OFFSET = IntQuery("offset", 0, 0, INT64_MAX)
AFTER = IntQuery("after", 0, 0, INT64_MAX)
LAST_EVENT_ID = IntQuery("Last-Event-ID", 0, 0, INT64_MAX)  # a header, read as `after` is


def page_limit(default: int) -> IntQuery:
    """The `limit` of a list: 1 to MAX_PAGE rows."""
    return IntQuery("limit", default, 1, MAX_PAGE)


__all__ = [
    "AFTER",
    "LAST_EVENT_ID",
    "MAX_PAGE",
    "OFFSET",
    "Endpoint",
    "Handler",
    "IntQuery",
    "decode_body",
    "encoder",
    "json_response",
    "page_limit",
    "read_body",
]
