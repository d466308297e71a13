"""A stored blob as an HTTP response body.

Starlette's FileResponse reads 64 KiB per thread hop, which kept a 1 GB download near
100 MB/s; this reads 4 MiB at a time, one read ahead of the socket, so the disk read of the
next chunk overlaps the send of this one. Blobs never change once stored, so no range or
conditional requests are needed (the worker and the client always want the whole blob).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["BlobResponse"]

_CHUNK = 4 << 20


class BlobResponse(Response):
    """The whole of one blob file, as application/octet-stream."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = os.stat(path).st_size
        super().__init__(
            media_type="application/octet-stream", headers={"content-length": str(self.size)}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        # uvicorn drops what is sent after the client has gone: stop reading the file then
        gone = asyncio.Event()
        watcher = asyncio.create_task(_until_disconnect(receive, gone))
        try:
            await self._send_file(send, gone)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _send_file(self, send: Send, gone: asyncio.Event) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-blob-read")
        ahead: Future[bytes] | None = pool.submit(os.pread, fd, _CHUNK, 0)
        try:
            sent = 0
            while ahead is not None and not gone.is_set():
                chunk = await asyncio.wrap_future(ahead)
                sent += len(chunk)
                more = bool(chunk) and sent < self.size
                ahead = pool.submit(os.pread, fd, _CHUNK, sent) if more else None
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            # the read ahead may still be running (client gone): close fd only after it
            if ahead is None:
                os.close(fd)
            else:
                ahead.add_done_callback(lambda _: os.close(fd))


async def _until_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()
