"""An in-process coordinator for client tests: no sockets, no worker processes.

`App` runs `build_app` inside its lifespan on an event loop in a thread of its own. Its
`transport` is an httpx transport to that app which serves sync and async clients alike (a
Client's own calls come from the test's thread, its futures' calls from their background
loop, an AsyncClient's from the test's loop): each request is handed to the app's loop, and
the response body comes back chunk by chunk as the app sends it, so an SSE stream delivers
each event as it happens and a client that stops reading disconnects.

Rejected: httpx.ASGITransport is async only and returns a response once the app has sent all
of it, so an event stream would arrive in one piece when its job ends; starlette's TestClient
transport is sync only and buffers the same way.

`FakeWorker` does a worker's part over the same transport, in the test's thread: register,
lease, run function tasks with the real runner (`corral.worker.pyrunner.run`), report.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import platform
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from corral.client._functions import CALL_FILE, FN_FILE, RESULT_FILE
from corral.coordinator import Settings, build_app
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.store import SQLiteStore
from corral.protocol import (
    INLINE_MAX,
    Assignment,
    LeaseGrant,
    LeaseRequest,
    OutputFile,
    Task,
    TaskResult,
    WorkerRegister,
    WorkerRegistered,
)
from corral.worker.pyrunner import run

TOKEN = "test-token"
URL = "http://corral.test"
BOUND = 10.0  # seconds any one step may take before the test counts as hung
T = TypeVar("T")
_END = b""  # ends a response body; the app's empty chunks are not queued


class _Exchange:
    """One request inside the app's loop: its response head, then its body chunks."""

    def __init__(self, body: bytes) -> None:
        self.body: bytes | None = body
        self.head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = asyncio.Future()
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.gone = asyncio.Event()  # the client closed the response, or it is complete
        self.task: asyncio.Task[None] | None = None

    async def receive(self) -> dict[str, Any]:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            if not self.head.done():  # done: the client gave up waiting
                self.head.set_result((message["status"], message.get("headers", [])))
        elif message["type"] == "http.response.body":
            if message.get("body"):
                self.chunks.put_nowait(message["body"])
            if not message.get("more_body", False):
                self.chunks.put_nowait(_END)
                self.gone.set()


class App:
    """A coordinator (SQLite store, local blobs) in its lifespan, on its own loop thread."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.settings = Settings(data_dir=data_dir, tokens={TOKEN: "alice"}, **settings)
        self.loop = asyncio.new_event_loop()
        self._exchanges: set[_Exchange] = set()
        self._stop: asyncio.Event | None = None
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="app", daemon=True)
        self._thread.start()
        ready.result(BOUND)
        self.transport = AppTransport(self)

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve(ready))
        self.loop.close()

    async def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        self._stop = asyncio.Event()
        self.store = SQLiteStore(self.settings.db_path)
        try:
            self.app = build_app(self.settings, self.store, LocalBlobs(self.settings.blob_dir))
            async with self.app.router.lifespan_context(self.app):
                ready.set_result(None)
                await self._stop.wait()
                for exchange in list(self._exchanges):  # streams still open
                    exchange.gone.set()
                    if exchange.task is not None:
                        exchange.task.cancel()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
        finally:
            self.store.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Leave the lifespan and stop the thread."""
        if self._stop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(BOUND)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the app's loop, from any other thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def client(self) -> httpx.Client:
        """A sync httpx client for the API, authenticated as the admin, on its own transport."""
        return httpx.Client(
            transport=AppTransport(self),
            base_url=URL + "/api/v1",
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=BOUND,
        )

    async def open(self, request: httpx.Request, body: bytes) -> _Exchange:
        """Start the app on one request (in the app's loop); return once its head is sent."""
        exchange = _Exchange(body)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": ("127.0.0.1", 123),
            "root_path": "",
        }

        async def serve() -> None:
            try:
                await self.app(scope, exchange.receive, exchange.send)
            except BaseException as exc:
                if not exchange.head.done():
                    exchange.head.set_exception(exc)
                raise
            finally:
                exchange.chunks.put_nowait(_END)
                exchange.gone.set()
                self._exchanges.discard(exchange)

        self._exchanges.add(exchange)
        exchange.task = asyncio.get_running_loop().create_task(serve())
        await exchange.head
        return exchange


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, app: App, exchange: _Exchange) -> None:
        self.app, self.exchange = app, exchange

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.app.submit(self.exchange.chunks.get()).result():
            yield chunk

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # the app's loop may be gone already
            self.app.loop.call_soon_threadsafe(self.exchange.gone.set)


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, app: App, exchange: _Exchange) -> None:
        self.app, self.exchange = app, exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await asyncio.wrap_future(self.app.submit(self.exchange.chunks.get())):
            yield chunk

    async def aclose(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.app.loop.call_soon_threadsafe(self.exchange.gone.set)


class AppTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An httpx transport to an `App`, for sync and async clients in any thread but its own."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.requests: list[str] = []  # "METHOD /path" of each request, in order

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        exchange = self.app.submit(self.app.open(request, request.read())).result(BOUND)
        status, headers = exchange.head.result()
        return httpx.Response(status, headers=headers, stream=_SyncBody(self.app, exchange))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        opening = self.app.submit(self.app.open(request, await request.aread()))
        exchange = await asyncio.wait_for(asyncio.wrap_future(opening), BOUND)
        status, headers = exchange.head.result()
        return httpx.Response(status, headers=headers, stream=_AsyncBody(self.app, exchange))


def sha(data: bytes) -> str:
    """The content address of some bytes."""
    return hashlib.sha256(data).hexdigest()


class FakeWorker:
    """A worker's part over the API, in the calling thread: lease, run, report."""

    def __init__(self, app: App, slots: int = 8, **capabilities: Any) -> None:
        self.http = app.client()
        self.work = app.settings.data_dir / "fake-worker"
        caps = {"python": platform.python_version(), **capabilities}
        registered = self._post("/workers", WorkerRegister("fake", slots, caps), WorkerRegistered)
        self.id = registered.id

    def __enter__(self) -> FakeWorker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close its connection."""
        self.http.close()

    def _post(self, path: str, body: Any, kind: type[T]) -> T:
        r = self.http.post(path, content=msgspec.json.encode(body), headers=_JSON)
        assert r.status_code < 300, r.text
        return msgspec.json.decode(r.content, type=kind)

    def lease(self, count: int = 1, wait: float = BOUND) -> list[Assignment]:
        """Up to `count` tasks, waiting up to `wait` seconds for the first."""
        request = LeaseRequest(max=count, wait=wait)
        return self._post(f"/workers/{self.id}/lease", request, LeaseGrant).assignments

    def report(
        self,
        grant: Assignment,
        exit_code: int | None = 0,
        result: bytes | None = None,
        stderr: bytes = b"",
        error: str | None = None,
    ) -> Task:
        """Report an attempt: its exit code, result file and stderr."""
        blobs = {sha(b): b for b in (result, stderr) if b}
        manifest = {RESULT_FILE: OutputFile(sha(result), len(result))} if result else {}
        for key, data in blobs.items():
            if len(data) > INLINE_MAX:  # too large to ride along: uploaded first
                assert self.http.put(f"/blobs/{key}", content=data).status_code < 300
        inline = {key: data for key, data in blobs.items() if len(data) <= INLINE_MAX}
        body = TaskResult(
            grant.lease_id,
            exit_code,
            stderr=sha(stderr) if stderr else None,
            manifest=manifest,
            error=error,
            inline=inline,
        )
        return self._post(f"/tasks/{grant.task_id}/result", body, Task)

    def run(self, grant: Assignment) -> Task:
        """Run a function task with the real runner, here; report what it returned."""
        task_dir = self.work / grant.task_id
        task_dir.mkdir(parents=True, exist_ok=True)
        for name, ref in grant.spec.inputs.items():
            data = grant.inline.get(ref.sha256)
            if data is None:
                data = self.http.get(f"/blobs/{ref.sha256}").content
            (task_dir / name).write_bytes(data)
        here = Path.cwd()
        os.chdir(task_dir)  # the runner names argument files relative to the task directory
        try:
            record, code = run(task_dir / FN_FILE, task_dir / CALL_FILE)
        finally:
            os.chdir(here)
        return self.report(grant, code, record)

    def run_all(self, count: int) -> list[Task]:
        """Lease and run tasks until `count` have been run."""
        done: list[Task] = []
        while len(done) < count:
            done += [self.run(grant) for grant in self.lease(count - len(done))]
        return done


_JSON = {"content-type": "application/json"}

__all__ = ["BOUND", "TOKEN", "URL", "App", "AppTransport", "FakeWorker", "sha"]
