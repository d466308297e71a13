"""What every route module shares: the endpoint record, JSON responses, body decoding.

Bodies are decoded in one place (`decode_body`) into protocol structs; any failure there, and
every ApiError or NotFound raised by the service, becomes `{"error": code, "detail": message}`
(app.py installs the handlers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

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
        raise ApiError("invalid_body", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise ApiError("bad_request", f"malformed JSON: {exc}") from exc


def int_param(request: Request, name: str, default: int, low: int = 0) -> int:
    """An integer query parameter of at least `low`, or `default` when absent."""
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise ApiError("bad_request", f"query parameter {name} must be an integer") from exc
    if value < low:
        raise ApiError("bad_request", f"query parameter {name} must be at least {low}")
    return value


__all__ = [
    "Endpoint",
    "Handler",
    "decode_body",
    "encoder",
    "int_param",
    "json_response",
    "read_body",
]
