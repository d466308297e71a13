"""build_app(settings, store, blobs) -> the coordinator's ASGI app."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from .blobs import LocalBlobs
from .errors import ApiError
from .openapi import openapi_document
from .routes import ENDPOINTS, Endpoint, decode_body, json_response
from .service import Coordinator
from .settings import Settings
from .store import NotFound, Store

PREFIX = "/api/v1"


def _error(code: str, detail: str, status: int) -> Response:
    return json_response({"error": code, "detail": detail}, status)


def _route(endpoint: Endpoint, coord: Coordinator) -> Route:
    async def call(request: Request) -> Response:
        body = None
        if endpoint.body is not None:
            body = await decode_body(request, coord, endpoint.body)
        result = await endpoint.handler(request, coord, body)
        return result if isinstance(result, Response) else json_response(result)

    return Route(
        PREFIX + endpoint.path, call, methods=[endpoint.method], name=endpoint.handler.__name__
    )


class BearerAuth:
    """Every request but /healthz carries `Authorization: Bearer <token>` of a known token."""

    def __init__(self, app: ASGIApp, tokens: dict[str, str]) -> None:
        self.app = app
        self.tokens = {t.encode(): owner for t, owner in tokens.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz" or not self.tokens:
            await self.app(scope, receive, send)
            return
        owner = self._owner(scope)
        if owner is None:
            response = _error("unauthorized", "send Authorization: Bearer <token>", 401)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)

    def _owner(self, scope: Scope) -> str | None:
        for key, value in scope["headers"]:
            if key == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
                for token, owner in self.tokens.items():
                    if hmac.compare_digest(given, token):
                        return owner
        return None


def build_app(settings: Settings, store: Store, blobs: LocalBlobs) -> Starlette:
    """The coordinator as an ASGI app; the lifespan starts and stops its background work."""
    coord = Coordinator(store, blobs, settings)
    document = openapi_document(ENDPOINTS, PREFIX, __version__)

    async def healthz(_: Request) -> Response:
        return json_response({"ok": True, "version": __version__})

    async def openapi(_: Request) -> Response:
        return json_response(document)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await coord.start()
        try:
            yield
        finally:
            await coord.stop()

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.code, exc.detail, exc.status)

    async def not_found(_: Request, exc: Exception) -> Response:
        return _error("not_found", str(exc), 404)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        detail = f"{request.method} {request.url.path}: {exc.detail}"
        return _error(code, detail, exc.status_code)

    async def internal(_: Request, exc: Exception) -> Response:
        return _error("internal", f"{type(exc).__name__}: {exc}", 500)

    routes = [Route("/healthz", healthz), Route(PREFIX + "/openapi.json", openapi)]
    routes += [_route(e, coord) for e in ENDPOINTS]
    handlers: dict[Any, Any] = {
        ApiError: api_error,
        NotFound: not_found,
        HTTPException: http_error,
        msgspec.ValidationError: internal,
        Exception: internal,
    }
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.coordinator = coord
    app.add_middleware(BearerAuth, tokens=settings.tokens)
    return app
