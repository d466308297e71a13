"""The web dashboard, served by the coordinator under /ui/ from its own store.

    web.py       who is asking (session cookie), CSRF, rendering, errors as pages, headers
    session.py   the cookie and the CSRF token (pure)
    pages.py     GET: jobs, a job, a task (logs, files), workers, admin; the refresh stream
    actions.py   POST: log in and out, Kill, Retry failed, Drain, tokens
    submit.py    POST: a job from a form or an uploaded job file
    views.py     ages, durations, progress, the overview's sparkline, keyset paging (pure)
    timeline.py  the job's timeline as SVG (pure)
    templates/   Jinja2; static/  one CSS and one JS file, no build step, no CDN

Pages are rendered on the server; the JS only refreshes the parts of a page marked
`data-live` when the page's event stream (`/ui/events`, one per open page) says something
changed. Every page reads what it shows and no more (the store's paged reads, _browse.py),
so a page of a job of 100,000 tasks costs what a page of a small one does.

Access is the API's: each route names the API operation whose role rule applies
(access.may_call), and objects are checked by the same guards (a `submit` token sees and acts
on its own jobs only). Actions call the same service methods and are audited the same way.

Rejected: a single-page app over the JSON API. It needs a build step and a bundle to ship,
and a browser cannot send the API's bearer token on an EventSource or a download link
without putting it in a URL.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..service import Coordinator
from . import actions, pages, submit
from .web import Dash

__all__ = ["PREFIX", "dashboard_routes"]

PREFIX = "/ui"


def dashboard_routes(coord: Coordinator, key: bytes) -> list[BaseRoute]:
    """The dashboard's routes, and `/` redirecting to it; `key` signs CSRF tokens."""
    dash = Dash(coord, key)

    async def home(_: object) -> Response:
        return RedirectResponse(PREFIX + "/", 303)

    get = [
        ("/", pages.jobs, "list_jobs"),
        ("/login", actions.login_form, None),
        ("/jobs/{id}", pages.job, "list_tasks"),
        ("/tasks/{id}", pages.task, "get_task"),
        ("/tasks/{id}/log/{stream}", pages.log, "task_log"),
        ("/tasks/{id}/files/{name:path}", pages.returned_file, "get_blob"),
        ("/workers", pages.workers, "list_workers"),
        ("/admin", pages.admin, "list_tokens"),
        ("/submit", submit.submit_form, "create_job"),
        ("/events", pages.events, "list_jobs"),
    ]
    post = [
        ("/login", actions.login, None),
        ("/logout", actions.logout, "list_jobs"),
        ("/jobs/{id}/kill", actions.kill_job, "kill_job"),
        ("/jobs/{id}/retry", actions.retry_job, "retry_job"),
        ("/tasks/{id}/kill", actions.kill_task, "kill_task"),
        ("/workers/{id}/drain", actions.drain_worker, "drain_worker"),
        ("/workers/{id}/evict", actions.evict_worker, "drain_worker"),
        ("/tokens", actions.create_token, "create_token"),
        ("/tokens/{id}/revoke", actions.revoke_token, "revoke_token"),
        ("/submit", submit.submit, "create_job"),
    ]
    static = StaticFiles(directory=Path(__file__).parent / "static")
    routes: list[BaseRoute] = [Route("/", home), Mount(PREFIX + "/static", static)]
    routes += [dash.route(PREFIX + path, fn, op) for path, fn, op in get]
    routes += [dash.route(PREFIX + path, fn, op, "POST") for path, fn, op in post]
    return routes
