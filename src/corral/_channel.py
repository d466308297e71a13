"""The persistent channel's client end (protocol/_channel.py): one WebSocket to the current
coordinator, kept open by a task of its own, carrying calls as frames.

    mode "http"   never opened: every call is an HTTP request
    mode "auto"   calls go over the channel while it is open, over HTTP while it is not
    mode "ws"     calls wait (up to the connect timeout) for the channel to be open

Failures look like HTTP's to the caller (`Channel.post`), so the code above needs no second
set of rules: a call sent on a socket that then dies raises httpx.ReadError (an answer lost: a
result is sent again and answered stale, as after a reset HTTP connection); an error answer
raises httpx.HTTPStatusError with the same status and JSON body; no answer in time raises
httpx.ReadTimeout and drops the socket (a cut link shows only as silence), whose URL then
stops being current, as _failover.py does for HTTP.

The channel follows the failover list: it opens to the current URL, and a call that finds the
current URL moved (an HTTP request failed over) closes it, to reopen at the new one. An
upgrade refused with an HTTP status (no channel there, or the token refused) or a socket that
cannot connect is tried again later, with the delays of `reconnect_delay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ._failover import Endpoints
from .protocol import (
    CANCEL,
    Answer,
    Call,
    ChannelMode,
    Pending,
    channel_url,
    decode_answer,
    encode_frame,
    reconnect_delay,
)

__all__ = ["Channel"]

log = logging.getLogger("corral.channel")
_JSON = {"content-type": "application/json"}


class Channel:
    """One kept-open WebSocket to the current one of `endpoints`, and the calls made on it."""

    def __init__(
        self,
        mode: ChannelMode,
        endpoints: Endpoints,
        token: str | None,
        tls: ssl.SSLContext | bool,
        connect_timeout: float,
    ) -> None:
        self.mode = mode
        self.endpoints = endpoints
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._tls = tls
        self.connect_timeout = connect_timeout
        self._ws: ClientConnection | None = None
        self._url = ""  # the base URL it is open to
        self._pending: Pending[Callable[[Answer | Exception], None]] = Pending()
        self._up = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self.opened = 0  # sockets opened so far

    def start(self) -> None:
        """Open the channel and keep it open (in a task of its own) unless mode is http."""
        if self.mode != "http" and self._keeper is None:
            self._keeper = asyncio.create_task(self._keep())

    async def aclose(self) -> None:
        """Close the socket and stop reopening it."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        ws = self._ws
        self._lost("closed")
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def usable(self) -> bool:
        """Whether the next call goes over the channel (in ws mode, waiting for it)."""
        if self.mode == "http":
            return False
        if self._ws is not None and self._url != self.endpoints.current:
            self.drop()  # an HTTP request failed over: follow it
        if self._ws is None and self.mode == "ws":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), self.connect_timeout)
            if self._ws is None:
                raise httpx.ConnectError("the coordinator's channel is not open (--channel ws)")
        return self._ws is not None

    async def post(self, path: str, content: bytes, timeout: float) -> bytes:
        """POST `content` to `path` (under /api/v1) over the channel; the answer's body, or
        the httpx error the same HTTP request would have raised."""
        answer = await self.call(Call(0, "POST", path, content), timeout)
        if not 200 <= answer.status < 300:
            request = httpx.Request("POST", self._url + "/api/v1" + path, headers=_JSON)
            response = httpx.Response(answer.status, content=answer.body, request=request)
            raise httpx.HTTPStatusError(
                f"{answer.status} from {path} (channel)", request=request, response=response
            )
        return answer.body

    async def call(self, call: Call, timeout: float) -> Answer:
        """Send one call (its id is set here) and wait for its answer."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

        def deliver(item: Answer | Exception) -> None:
            if not future.done():
                if isinstance(item, Exception):
                    future.set_exception(item)
                else:
                    future.set_result(item)

        async with self._sent(call, deliver, timeout) as _:
            return await future

    async def stream(self, call: Call, timeout: float) -> AsyncGenerator[Answer, None]:
        """Send one call and yield its answer's parts as they come (`timeout`: at most this
        long between two); a stream left unread is cancelled at the coordinator."""
        parts: asyncio.Queue[Answer | Exception] = asyncio.Queue()
        async with self._sent(call, parts.put_nowait, timeout) as timer:
            while True:
                part = await parts.get()
                if isinstance(part, Exception):
                    raise part
                yield part
                if not part.more:
                    return
                timer.reschedule(asyncio.get_running_loop().time() + timeout)

    @contextlib.asynccontextmanager
    async def _sent(
        self, call: Call, deliver: Callable[[Answer | Exception], None], timeout: float
    ) -> AsyncIterator[asyncio.Timeout]:
        """Send `call` on the open socket, answers going to `deliver`; within the block, the
        timeout of the wait for them, and the failures as httpx raises them."""
        ws, pending, url = self._ws, self._pending, self._url
        if ws is None:
            raise httpx.ReadError("the channel is not open")
        call_id = pending.open(deliver)
        try:
            await ws.send(encode_frame(msgspec.structs.replace(call, id=call_id)))
            async with asyncio.timeout(timeout) as timer:
                yield timer
        except ConnectionClosed as exc:
            raise httpx.ReadError(f"the channel closed: {exc}") from exc
        except TimeoutError:
            log.warning("no answer over the channel to %s in %.0f s: closing it", url, timeout)
            self.endpoints.failed(url)
            self.drop()
            raise httpx.ReadTimeout(f"no answer over the channel in {timeout:.0f} s") from None
        finally:
            if pending.settle(call_id) is not None and ws is self._ws:  # given up on: stop it
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(encode_frame(Call(call_id, CANCEL, "")))

    def drop(self) -> None:
        """Give the socket up now (its calls fail as lost); the keeper opens a new one."""
        ws = self._ws
        self._lost("dropped")
        if ws is not None:
            task = asyncio.create_task(ws.close())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _lost(self, why: str) -> None:
        self._ws = None
        self._up.clear()
        for deliver in self._pending.drop_all():
            deliver(httpx.ReadError(f"the channel was {why}"))
        self._pending = Pending()

    async def _keep(self) -> None:
        failures, refused = 0, False
        while True:
            url = self.endpoints.current
            try:
                ws = await connect(
                    channel_url(url),
                    additional_headers=self._headers,
                    ssl=self._ssl(url),
                    compression=None,  # small frames: deflate costs more CPU than it saves
                    open_timeout=self.connect_timeout,
                    max_size=None,
                    close_timeout=1,
                    user_agent_header="corral",
                )
            except InvalidStatus as exc:
                failures, refused = failures + 1, True
                log.info("no channel at %s (HTTP %s): using HTTP", url, exc.response.status_code)
            except (OSError, TimeoutError, WebSocketException) as exc:
                failures, refused = failures + 1, False
                log.info("cannot open the channel to %s: %s", url, exc)
                if len(self.endpoints.urls) > 1:
                    self.endpoints.failed(url)
            else:
                failures, refused = 1, False
                await self._serve(ws, url)
            await asyncio.sleep(reconnect_delay(failures, refused))

    def _ssl(self, url: str) -> ssl.SSLContext | None:
        """What websockets verifies a wss:// coordinator with: httpx's `verify` (a context,
        or True: the system's CAs, which is websockets' default); None for ws://."""
        if url.lower().startswith("https") and isinstance(self._tls, ssl.SSLContext):
            return self._tls
        return None

    async def _serve(self, ws: ClientConnection, url: str) -> None:
        """Read answers until the socket closes."""
        self._ws, self._url = ws, url
        pending = self._pending
        self.opened += 1
        self._up.set()
        log.info("channel open to %s", url)
        try:
            async for data in ws:
                answer = decode_answer(data)  # type: ignore[arg-type]
                deliver = (pending.peek if answer.more else pending.settle)(answer.id)
                if deliver is not None:
                    deliver(answer)
        except (ConnectionClosed, msgspec.DecodeError) as exc:
            log.info("channel to %s closed: %s", url, exc)
        finally:
            if self._ws is ws:
                self._lost("closed")
            with contextlib.suppress(Exception):
                await ws.close()
