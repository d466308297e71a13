"""The OpenAPI document, built from the endpoint table and the msgspec wire models."""

from __future__ import annotations

from typing import Any

import msgspec

from ..protocol import ErrorBody
from .routes import Endpoint, IntQuery

_REF = "#/components/schemas/{name}"


def _int_schema(q: IntQuery) -> dict[str, Any]:
    return {"type": "integer", "minimum": q.low, "maximum": q.high, "default": q.default}


def openapi_document(endpoints: list[Endpoint], prefix: str, version: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document for `endpoints` mounted under `prefix`."""
    kinds = sorted(
        {t for e in endpoints for t in (e.body, e.returns) if t is not None} | {ErrorBody},
        key=repr,
    )
    schemas, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    by_kind = dict(zip(kinds, schemas, strict=True))
    error = {"application/json": {"schema": by_kind[ErrorBody]}}
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": e.handler.__name__,
            "responses": {
                str(e.status): {"description": "OK"},
                "4XX": {"description": "Refused", "content": error},
            },
        }
        if e.returns is not None:
            op["responses"][str(e.status)]["content"] = {
                "application/json": {"schema": by_kind[e.returns]}
            }
        if e.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_kind[e.body]}},
            }
        params = [seg[1:-1] for seg in e.path.split("/") if seg.startswith("{")]
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
        # integer query parameters with their ranges, so generated requests try the edges
        parameters += [
            {"name": q.name, "in": "query", "required": False, "schema": _int_schema(q)}
            for q in e.query
        ]
        if parameters:
            op["parameters"] = parameters
        paths.setdefault(prefix + e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Corral coordinator", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
