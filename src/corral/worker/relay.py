"""Each sandboxed task's private channel to the coordinator: an HTTP relay on a Unix socket.

A task under bubblewrap has no network, yet `corral.current()` and `corral submit --job` must
reach the coordinator. So while a task runs without the network (`needs_relay`), its worker
listens on `<task dir>/.corral/api.sock` and sets the task's CORRAL_URL to
`unix://<that path>` (the client understands it, _unix.py). The task directory is bound into
the sandbox at its own path, and a pooled runner's tasks live inside the root its sandbox
binds, so the socket is there in both cases with no extra mount.

What goes through: only the requests a job token may make (protocol/_relay.py), each sent on
with the worker's own HTTP client (its TLS, CA and failover) and *this task's* job token, in
place of whatever Authorization the task sent; anything else is answered 403 here. The relay
stops with the task, and the token dies with the lease anyway.

A task hosted by a slot's pooled runner (fnpool.py) uses its seat's relay instead: one
socket in the runner's root, made when the seat first needs one and kept while the runner
serves the same owner (the pool key), presenting the job token of the task the seat runs
now, and none between tasks (403). It costs nothing per task; a socket, a directory and a
listener made and removed for each task cost about as much as the task itself on B2. It
gives a task no more than it had: the runner process its calls run in is already shared by
that owner's tasks of one seat, one after another.

Who can connect: the socket is 0600, in the task directory that the guard hands to the
task's user (a slot uid on a root worker, taskuser.hand_over) before it starts, so only the
task's own uid (and root) may connect; another slot's task cannot even search the directory.

Rejected:
- a TCP port on loopback: the sandbox's network namespace has its own loopback, and on the
  host any local user could connect to it;
- one socket per worker naming the task in each request: a task could claim another's job;
- relaying bytes without reading HTTP: paths could not be checked, nor the token replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import h11
import httpx

from .._unix import UnixAddress, unix_url
from ..protocol import RELAY_SOCKET, STATE_DIR, relay_allows
from .sandbox import SandboxPolicy, wants_network

__all__ = ["Relay", "needs_relay", "relay_channel", "relay_socket"]

log = logging.getLogger("corral.worker")
_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"host"}
    | {b"proxy-authorization", b"proxy-connection", b"authorization"}
)
# a task's event stream sends a keepalive every 15 s: silence well past it is a dead link
_TIMEOUT = httpx.Timeout(30.0, read=120.0)
_READ = 64 * 1024


def needs_relay(policy: SandboxPolicy, requires: Mapping[str, str]) -> bool:
    """Whether a task needs the relay: its sandbox gives it no network."""
    return policy.bwrap is not None and not (policy.allow_network and wants_network(requires))


@contextlib.asynccontextmanager
async def relay_channel(
    http: httpx.AsyncClient, token: str | None, work: Path, needed: bool
) -> AsyncIterator[str | None]:
    """While inside, a relay for the task in `work` when `needed` (and it has a job token to
    present): its CORRAL_URL, else None."""
    if not needed or not token:
        yield None
        return
    relay = Relay(http, token)
    try:
        yield await relay.start(work)
    finally:
        await relay.close()


def relay_socket(work: Path) -> Path:
    """Where a task's relay listens, inside its directory (never one of its outputs)."""
    return work / STATE_DIR / RELAY_SOCKET


class Relay:
    """One task's relay: listens until closed."""

    def __init__(self, http: httpx.AsyncClient, token: str | None) -> None:
        self._http = http
        self.token = token  # the job token presented; None: no task is served now (403)
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.url = ""
        self.path: Path | None = None
        self.owner: tuple[int, int] | None = None  # who the socket was handed to

    async def start(self, work: Path) -> str:
        """Listen in the task directory `work`; the CORRAL_URL that reaches this relay."""
        # a pooled task's `work` links into a runner's root
        return await self.listen(relay_socket(work.resolve()))

    def hand_to(self, uid: int, gid: int) -> None:
        """Let `uid` (a slot's user) connect: the socket and its directory become its own."""
        if self.path is None or self.owner == (uid, gid):
            return
        # by the directory's descriptor, opened without following a link: the directory may
        # be in a runner's root (fnpool.seat_relay), which the runner could have replaced
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path.parent, flags)
        try:
            os.fchown(fd, uid, gid)
            os.chown(self.path.name, uid, gid, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)
        self.owner = (uid, gid)

    async def listen(self, path: Path) -> str:
        """Listen at `path`; the CORRAL_URL that reaches this relay."""
        os.makedirs(path.parent, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # an earlier run's, after a checkpoint
        address = UnixAddress(str(path))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.short)
            os.chmod(path, 0o600)  # connecting takes write permission: the owner's only
            self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        except BaseException:
            sock.close()
            raise
        finally:
            address.close()
        self.url, self.path = unix_url(str(path)), path
        return self.url

    async def close(self, remove: bool = False) -> None:
        """Stop listening and drop every connection; `remove` the socket and its directory."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns):
            conn.cancel()
        if self._conns:
            await asyncio.wait(self._conns)
        if remove and self.path is not None:  # a seat's root is removed once empty
            with contextlib.suppress(OSError):
                os.unlink(self.path)
                os.rmdir(self.path.parent)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._conns.add(me)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next(conn, reader)
                if not isinstance(event, h11.Request):
                    break
                await self._one(conn, event, reader, writer)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (h11.ProtocolError, OSError, httpx.HTTPError) as exc:
            log.debug("relay connection ended: %s", exc)
        finally:
            self._conns.discard(me)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one(
        self,
        conn: h11.Connection,
        request: h11.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Answer one request: forwarded when a job token may make it, else 403."""
        method, target = request.method.decode(), request.target.decode("latin-1")
        path = relay_allows(method, target)
        token = self.token
        if path is None or token is None:
            await _drain(conn, reader)
            detail = f"a task may not call {method} {target.partition('?')[0]}"
            if token is None:
                detail = "no task of this slot is running: its relay serves none"
            await _reply(conn, writer, 403, {"error": "forbidden", "detail": detail})
            return
        headers = {k.decode(): v.decode("latin-1") for k, v in request.headers if k not in _HOP}
        headers["authorization"] = f"Bearer {token}"
        has_body = "content-length" in headers or any(
            k == b"transfer-encoding" for k, _ in request.headers
        )
        if not has_body:
            await _drain(conn, reader)
        sent = self._http.build_request(
            method,
            path,
            headers=headers,
            content=_body(conn, reader) if has_body else None,
            timeout=_TIMEOUT,
        )
        try:
            response = await self._http.send(sent, stream=True)
        except httpx.TransportError as exc:
            await _drain(conn, reader)
            detail = f"the worker cannot reach the coordinator: {exc}"
            await _reply(conn, writer, 502, {"error": "unavailable", "detail": detail})
            return
        try:
            passed = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
            await _send(
                conn, writer, h11.Response(status_code=response.status_code, headers=passed)
            )
            async for chunk in response.aiter_raw():
                await _send(conn, writer, h11.Data(data=chunk))
            await _send(conn, writer, h11.EndOfMessage())
        finally:
            await response.aclose()


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    """The next h11 event, reading from the task as needed."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(_READ))


async def _body(conn: h11.Connection, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """A request's body as the task sends it."""
    while True:
        event = await _next(conn, reader)
        if isinstance(event, h11.Data):
            yield bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return
        else:
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in a body")


async def _drain(conn: h11.Connection, reader: asyncio.StreamReader) -> None:
    """Read (and drop) what is left of a request's body."""
    if conn.their_state is h11.SEND_BODY:
        async for _ in _body(conn, reader):
            pass


async def _send(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    event: h11.Response | h11.Data | h11.EndOfMessage,
) -> None:
    data = conn.send(event)
    if data:
        writer.write(data)
        await writer.drain()


async def _reply(
    conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: Mapping[str, str]
) -> None:
    data = json.dumps(body).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
    await _send(conn, writer, h11.Response(status_code=status, headers=headers))
    await _send(conn, writer, h11.Data(data=data))
    await _send(conn, writer, h11.EndOfMessage())
