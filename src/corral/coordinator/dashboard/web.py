"""Request plumbing shared by the dashboard's pages and actions: who is asking (from the
session cookie), the CSRF check on every POST, rendering, headers, and errors as pages.

A handler is `async (request, dash) -> Response`. `Dash.route` wraps it: no session sends a
page to the login form; the caller's role must allow the API operation the handler stands
for (access.may_call, exactly as the API checks it); a POST without the session's CSRF token
is refused (403); an ApiError or NotFound raised anywhere below becomes an error page with
the API's status and words, never a 500.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..access import Principal, authenticate, may_call
from ..errors import ApiError
from ..guards import check_path_params
from ..service import Coordinator
from ..store import NotFound
from . import views
from .session import COOKIE, csrf_ok, csrf_token

__all__ = ["CSP", "Dash", "Handler", "form_of"]

Handler = Callable[[Request, "Dash"], Awaitable[Response]]

# no inline script or style, nothing from elsewhere, no framing
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
MAX_FORM_BYTES = 64 * 1024 * 1024  # a submit form's files, in all
TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Dash:
    """The dashboard's state: the coordinator it shows and its template environment."""

    coord: Coordinator
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    env: jinja2.Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters.update(
            ago=views.ago, duration=views.duration, short=lambda s: s[:8], shell_words=shlex.join
        )
        self.env.globals.update(svg=lambda text: Markup(text), quote=quote)

    def now(self) -> float:
        """The coordinator's clock."""
        return self.coord.clock()

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        """A template as a page, with the overview and the session's CSRF token."""
        who: Principal | None = getattr(request.state, "principal", None)
        secret = getattr(request.state, "secret", "")
        store, now = self.coord.store, self.now()
        strip = None
        if who is not None:
            finished = store.finished_times(now - 30 * 60)
            strip = views.overview(store.list_workers(), store.farm_counts(), finished, now)
        ctx.setdefault("live", "")  # the page's refresh stream; none: the page stays as it is
        text = self.env.get_template(name).render(
            who=who,
            csrf=csrf_token(self.key, secret) if secret else "",
            strip=strip,
            spark=views.sparkline(strip.finished) if strip else "",
            now=now,
            path=request.url.path,
            **ctx,
        )
        return HTMLResponse(text, status, headers=HEADERS)

    def error(self, request: Request, status: int, code: str, detail: str) -> Response:
        """An error as a page (the API's code and words)."""
        return self.render(request, "error.html", status, code=code, detail=detail)

    def route(
        self, path: str, handler: Handler, operation: str | None, method: str = "GET"
    ) -> Route:
        """A dashboard route: `operation` is the API operation whose access rule applies
        (None: no session needed, as for the login form)."""

        async def call(request: Request) -> Response:
            try:
                refused = await self._admit(request, operation, method)
                return refused or await handler(request, self)
            except ApiError as exc:
                return self.error(request, exc.status, exc.code, exc.detail)
            except NotFound as exc:
                return self.error(request, 404, "not_found", str(exc))
            finally:
                form = getattr(request.state, "form", None)
                if isinstance(form, FormData):
                    await form.close()  # uploads spooled to temporary files

        return Route(path, call, methods=[method], name=f"ui.{handler.__name__}")

    async def _admit(self, request: Request, operation: str | None, method: str) -> Response | None:
        """Authenticate, authorise and check CSRF; a response when the request is refused."""
        check_path_params(request)
        secret = request.cookies.get(COOKIE, "")
        found: Principal | str = "not logged in"
        if secret:
            found = authenticate(self.coord.store, self.coord.job_tokens, secret, self.now())
        if isinstance(found, Principal):
            request.state.principal, request.state.owner = found, found.owner
            request.state.secret = secret
        if operation is None:
            return None
        if not isinstance(found, Principal):
            if method == "GET":
                target = "/ui/login?next=" + quote(request.url.path, safe="/")
                return RedirectResponse(target, 303, headers=HEADERS)
            raise ApiError("unauthorized", f"{found}: log in again")
        if not may_call(found, operation):
            raise ApiError("forbidden", f"a {found.role} token may not call {operation}")
        if method == "POST":
            form = await form_of(request)
            sent = form.get("csrf")
            if not csrf_ok(self.key, secret, sent if isinstance(sent, str) else None):
                raise ApiError("forbidden", "the form's CSRF token is missing or wrong: reload")
        return None


async def form_of(request: Request) -> FormData:
    """The request's form, read once (urlencoded or multipart, within MAX_FORM_BYTES)."""
    cached = getattr(request.state, "form", None)
    if isinstance(cached, FormData):
        return cached
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise ApiError("too_large", f"the form is over {MAX_FORM_BYTES} bytes")
    try:
        form = await request.form(max_part_size=MAX_FORM_BYTES)
    except Exception as exc:  # a malformed body: python-multipart raises several kinds
        raise ApiError("bad_request", f"the form could not be read: {exc}") from exc
    request.state.form = form
    return form
