"""The dashboard's session cookie and CSRF tokens (pure: no request objects).

The session cookie holds the token the user typed, HttpOnly (no script can read it),
SameSite=Strict (no other site's page sends it), Secure over TLS, and scoped to /ui. Every
request looks the token up as the API does (access.authenticate), so revoking the token ends
its sessions at once, and every coordinator of a farm accepts the same cookie.

A POST must also carry a CSRF token: an HMAC of the session's token under the coordinator's
key, put in each form of the pages it serves. Another site can neither read it nor make it.

Rejected: a server-side session table. It is one more thing to expire and clean up, it would
have to be shared by the coordinators of a farm, and it would outlive a revoked token unless
checked against it anyway.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["COOKIE", "PATH", "clear_cookie", "csrf_ok", "csrf_token", "session_cookie"]

COOKIE = "corral_session"
PATH = "/ui"


def csrf_token(key: bytes, secret: str) -> str:
    """The CSRF token of the session holding `secret`."""
    return hmac.new(key, b"csrf:" + secret.encode(), hashlib.sha256).hexdigest()


def csrf_ok(key: bytes, secret: str, sent: str | None) -> bool:
    """Whether a POST's CSRF token is the session's."""
    return bool(sent) and hmac.compare_digest(csrf_token(key, secret), str(sent))


def session_cookie(secret: str, secure: bool) -> str:
    """The Set-Cookie value that starts a session (a browser session: no Max-Age)."""
    flags = f"; Path={PATH}; HttpOnly; SameSite=Strict"
    return f"{COOKIE}={secret}{flags}" + ("; Secure" if secure else "")


def clear_cookie(secure: bool) -> str:
    """The Set-Cookie value that ends a session."""
    flags = f"; Path={PATH}; Max-Age=0; HttpOnly; SameSite=Strict"
    return f"{COOKIE}={flags}" + ("; Secure" if secure else "")
