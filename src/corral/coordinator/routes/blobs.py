"""Blobs: which to upload, upload one by its sha256, download one.

A caller may read a blob only once it has uploaded it or been granted it (its job produced
it); see guards.unowned.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ...protocol import MissingBlobs, MissingBlobsReply, is_sha256
from .. import guards
from ..blobs import BlobError, BlobResponse
from ..errors import ApiError
from ..service import Coordinator
from ._common import Endpoint, json_response


async def missing_blobs(request: Request, coord: Coordinator, body: MissingBlobs) -> Any:
    bad = [h for h in body.sha256 if not is_sha256(h)]
    if bad:
        raise ApiError("invalid_argument", f"{bad[0]!r} is not a sha256 hex digest")
    # a submitter proves it has a blob by uploading it, even when someone else already did
    absent = set(coord.blobs.missing(body.sha256))
    absent.update(guards.unowned(request, coord.store, body.sha256))
    return MissingBlobsReply([h for h in dict.fromkeys(body.sha256) if h in absent])


async def put_blob(request: Request, coord: Coordinator, _: None) -> Response:
    sha = request.path_params["sha256"]
    try:
        if coord.blobs.has(sha) and not guards.unowned(request, coord.store, [sha]):
            async for _chunk in request.stream():  # drain so the connection stays usable
                pass
            return json_response({"sha256": sha, "stored": False}, 200)
        size = await coord.blobs.put(sha, request.stream(), coord.settings.max_blob_bytes)
    except BlobError as exc:
        raise ApiError(exc.code, exc.detail) from exc
    guards.grant(request, coord.store, [sha])
    return json_response({"sha256": sha, "size": size, "stored": True}, 201)


async def get_blob(request: Request, coord: Coordinator, _: None) -> Response:
    try:
        path = coord.blobs.path(request.path_params["sha256"])
    except BlobError as exc:
        raise ApiError(exc.code, exc.detail) from exc
    if not path.is_file():
        raise ApiError("not_found", f"no blob {request.path_params['sha256']}")
    if guards.unowned(request, coord.store, [request.path_params["sha256"]]):
        raise ApiError("forbidden", f"blob {request.path_params['sha256']} is not yours")
    return BlobResponse(path)


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/blobs/missing",
        missing_blobs,
        "Which blobs to upload",
        MissingBlobs,
        MissingBlobsReply,
    ),
    Endpoint(
        "PUT",
        "/blobs/{sha256}",
        put_blob,
        "Upload a blob by its sha256",
        None,
        None,
        201,
        http_only=True,
    ),
    Endpoint("GET", "/blobs/{sha256}", get_blob, "Download a blob", http_only=True),
]

__all__ = ["ENDPOINTS"]
