"""Error codes carried in the `error` field of every failed API answer.

The HTTP status says what class of failure it is; the code says which one exactly.
"""

from __future__ import annotations

#: code -> HTTP status
ERROR_STATUS: dict[str, int] = {
    "bad_request": 400,
    "invalid_body": 422,
    "invalid_argument": 422,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "stale_lease": 409,
    "hash_mismatch": 422,
    "too_large": 413,
    "unsupported_media_type": 415,
    "internal": 500,
    # the coordinator cannot reach its database or its blob store now: try again, or another
    "unavailable": 503,
}
