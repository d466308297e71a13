"""The channel's coordinator side: calls read off a WebSocket, served by the HTTP app itself.

Each call (protocol/_channel.py) becomes an in-process ASGI HTTP request to this very app, with
the headers the WebSocket was opened with: the same TokenAuth (the token checked again on
every call, so a revoked one stops working at its next call, as over HTTP), the same route,
access rule (`may_call`), body decoding, handler, group commit and error handlers. The channel
adds only the envelope; nothing about leases, results or heartbeats is written twice. A call
answered 401 closes the channel after its answer: the worker falls back to HTTP, where the
token is refused in the usual way.

Calls run as tasks of their own, so answers go out as they are ready: a lease call held for
its long poll answers the moment there is work (the push), while heartbeats come and go.

When the socket goes, the calls still being served finish as an HTTP request whose client
went away would: their answers are lost, and the worker treats them as such (results are
sent again and answered stale; a grant's leases expire and are requeued).

A response the handler streams (a job's Server-Sent Events) goes out part by part as the
handler yields them, each part a frame (`Answer.more`): events are pushed as they happen, over
the same handler as SSE. A `CANCEL` call stops one (the client stopped reading). Blob up- and
downloads are refused over the channel (routes: `Endpoint.http_only`): bytes in bulk stay on
HTTP, where they stream to and from files.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.types import Message, Scope
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..protocol import CANCEL, Answer, Call, ErrorBody, decode_call, encode_frame
from .metrics import Metrics

__all__ = ["CHANNEL_SCOPE", "ChannelServer", "call_scope"]

#: set in the scope of a request that came over the channel
CHANNEL_SCOPE = "corral.channel"
_KEPT = (b"authorization", b"host", b"user-agent")
_JSON = (b"content-type", b"application/json")


def call_scope(ws_scope: Scope, method: str, path: str, body_size: int) -> Scope:
    """The HTTP scope of one call on a channel opened with `ws_scope` (path under /api/v1,
    perhaps with a query)."""
    path, _, query = path.partition("?")
    full = "/api/v1" + path
    headers = [(k, v) for k, v in ws_scope["headers"] if k in _KEPT]
    headers += [_JSON, (b"content-length", b"%d" % body_size)]
    return {
        "type": "http",
        "asgi": ws_scope.get("asgi", {"version": "3.0"}),
        "http_version": "1.1",
        "method": method,
        "scheme": "https" if ws_scope.get("scheme") == "wss" else "http",
        "path": full,
        "raw_path": full.encode(),
        "root_path": ws_scope.get("root_path", ""),
        "query_string": query.encode(),
        "headers": headers,
        "client": ws_scope.get("client"),
        "server": ws_scope.get("server"),
        "extensions": {},
        CHANNEL_SCOPE: True,
    }


class ChannelServer:
    """The WebSocket endpoint of `GET /api/v1/channel` (TokenAuth has let it through)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def endpoint(self, websocket: WebSocket) -> None:
        """Serve one channel until the peer closes it."""
        await websocket.accept()
        app = websocket.scope["app"]
        gone = asyncio.Event()
        lock = asyncio.Lock()
        serving: dict[int, asyncio.Task[None]] = {}
        self.metrics.channels.inc()
        try:
            while True:
                data = await websocket.receive_bytes()
                try:
                    call = decode_call(data)
                except msgspec.DecodeError:
                    await websocket.close(1007, "not a channel call")
                    return
                if call.method == CANCEL:
                    stopped = serving.pop(call.id, None)
                    if stopped is not None:
                        stopped.cancel()
                    continue
                task = asyncio.create_task(self._serve(app, websocket, call, gone, lock))
                serving[call.id] = task
                task.add_done_callback(functools.partial(_forget, serving, call.id))
        except (WebSocketDisconnect, KeyError, RuntimeError):
            pass  # closed (receive_bytes: KeyError on a text frame)
        finally:
            gone.set()
            self.metrics.channels.dec()

    async def _serve(
        self, app: Any, websocket: WebSocket, call: Call, gone: asyncio.Event, lock: asyncio.Lock
    ) -> None:
        self.metrics.channel_calls.inc()
        scope = call_scope(websocket.scope, call.method, call.path, len(call.body))

        async def answer(status: int, body: bytes, more: bool) -> None:
            frame = encode_frame(Answer(call.id, status, body, more))
            async with lock:
                await websocket.send_bytes(frame)

        # the socket may be gone: the answer is lost, as an HTTP one would be
        with contextlib.suppress(Exception):
            status = await _run(app, scope, call.body, gone, answer)
            if status == 401:
                await websocket.close(1008, "token refused")


def _forget(serving: dict[int, asyncio.Task[None]], call_id: int, _: object) -> None:
    serving.pop(call_id, None)


async def _run(
    app: Any,
    scope: Scope,
    body: bytes,
    gone: asyncio.Event,
    answer: Callable[[int, bytes, bool], Awaitable[None]],
) -> int:
    """Run one HTTP request through the ASGI app in process, passing its body on to `answer`
    as the app sends it (one part for an ordinary response); its status."""
    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            more = bool(message.get("more_body", False))
            chunk = message.get("body", b"")
            if chunk or not more:
                await answer(status, chunk, more)

    try:
        await app(scope, receive, send)
    except Exception as exc:  # the app's error handlers answered 500 already, or nothing did
        if not status:
            status = 500
            error = ErrorBody("internal", f"{type(exc).__name__}: {exc}")
            await answer(status, msgspec.json.encode(error), False)
    return status
