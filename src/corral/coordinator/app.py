"""build_app(settings, store, blobs) -> the coordinator's ASGI app."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from .. import __version__
from ..protocol import CHANNEL_PATH
from .access import hash_secret, may_call
from .blobs import BlobError, Blobs
from .channel import CHANNEL_SCOPE, ChannelServer
from .dashboard import dashboard_routes
from .errors import ApiError
from .guards import OPEN_PATHS, TokenAuth, check_path_params, principal
from .metrics import METRICS_PATH
from .openapi import openapi_document
from .routes import ENDPOINTS, Endpoint, decode_body, json_response
from .service import Coordinator
from .settings import Settings
from .store import NotFound, Store, TokenRecord

PREFIX = "/api/v1"


def _error(code: str, detail: str, status: int) -> Response:
    return json_response({"error": code, "detail": detail}, status)


def _route(endpoint: Endpoint, coord: Coordinator) -> Route:
    operation = endpoint.handler.__name__

    async def call(request: Request) -> Response:
        who = principal(request)
        if not may_call(who, operation):
            raise ApiError("forbidden", f"a {who.role} token may not call {operation}")
        check_path_params(request)
        if endpoint.http_only and CHANNEL_SCOPE in request.scope:
            raise ApiError("bad_request", f"{operation} moves a blob: call it over HTTP")
        body = None
        if endpoint.body is not None:
            body = await decode_body(request, coord, endpoint.body)
        began = time.perf_counter()
        result = await endpoint.handler(request, coord, body)
        coord.metrics.request(operation, time.perf_counter() - began)
        return result if isinstance(result, Response) else json_response(result)

    return Route(
        PREFIX + endpoint.path, call, methods=[endpoint.method], name=endpoint.handler.__name__
    )


# The calls a farm makes for every task or so, in that order. Starlette tries routes one by
# one (a regex each) until one matches; no two endpoints match the same method and path
# (test_app_routes.py), so the order changes only how many it tries: the lease was 26th.
HOT = ("lease", "worker_results", "heartbeat", "task_result", "job_events", "get_task")


def by_traffic(endpoints: list[Endpoint]) -> list[Endpoint]:
    """The endpoints with the HOT ones first (then in their table's order)."""
    rank = {name: i for i, name in enumerate(HOT)}
    return sorted(endpoints, key=lambda e: rank.get(e.handler.__name__, len(HOT)))


def build_app(settings: Settings, store: Store, blobs: Blobs) -> Starlette:
    """The coordinator as an ASGI app; the lifespan starts and stops its background work."""
    coord = Coordinator(store, blobs, settings)
    document = openapi_document(ENDPOINTS, PREFIX, __version__)
    _bootstrap_tokens(store, settings, coord.clock())

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

    async def blob_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, BlobError)
        return _error(exc.code, exc.detail, ApiError(exc.code, exc.detail).status)

    async def unavailable(_: Request, exc: Exception) -> Response:
        # the database is down or cut off: another coordinator (or a retry) may do better
        return _error("unavailable", f"the coordinator's database: {exc}", 503)

    async def internal(_: Request, exc: Exception) -> Response:
        return _error("internal", f"{type(exc).__name__}: {exc}", 500)

    async def ca_pem(_: Request) -> Response:
        if settings.ca_file is None:
            return _error("not_found", "this coordinator does not serve TLS", 404)
        return Response(settings.ca_file.read_bytes(), media_type="application/x-pem-file")

    routes: list[BaseRoute] = [_route(e, coord) for e in by_traffic(ENDPOINTS)]
    routes += [Route("/healthz", healthz), Route(PREFIX + "/openapi.json", openapi)]
    routes += [Route("/ca.pem", ca_pem)]
    routes += [Route(METRICS_PATH, coord.metrics.endpoint(settings.metrics_public))]
    routes += [WebSocketRoute(CHANNEL_PATH, ChannelServer(coord.metrics).endpoint)]
    routes += dashboard_routes(coord, settings.job_key or secrets.token_bytes(32))
    handlers: dict[Any, Any] = {
        ApiError: api_error,
        NotFound: not_found,
        HTTPException: http_error,
        msgspec.ValidationError: internal,
        BlobError: blob_error,
        **{error: unavailable for error in store.errors},
        Exception: internal,
    }
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.coordinator = coord
    open_paths = OPEN_PATHS | ({METRICS_PATH} if settings.metrics_public else set())
    app.add_middleware(
        TokenAuth,
        store=store,
        job_tokens=coord.job_tokens,
        clock=coord.clock,
        open_paths=open_paths,
    )
    return app


def _bootstrap_tokens(store: Store, settings: Settings, now: float) -> None:
    """Admin tokens given at start go into the store, hashed, unless already there (and
    perhaps revoked: a revoked bootstrap token stays revoked)."""
    for secret, name in settings.tokens.items():
        digest = hash_secret(secret)
        if store.token_by_hash(digest) is None:
            store.add_token(TokenRecord(f"tok_{digest[:12]}", name, "admin", name, digest, now))
