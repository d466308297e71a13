"""The failover transport: the URL list and when a request moves to the next coordinator."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from corral._failover import AsyncFailover, Endpoints, SyncFailover, primary_url, split_urls
from corral._net import is_loopback_url


def test_split_and_primary() -> None:
    assert split_urls(" http://a:1/, http://b:2 ,") == ["http://a:1", "http://b:2"]
    assert primary_url("http://a:1,http://b:2") == "http://a:1"


def test_endpoints_move_on_only_from_the_current_url() -> None:
    e = Endpoints(["a", "b"])
    assert e.retry_after("a", httpx.ConnectError("refused"), 1) is True
    assert e.current == "b"
    e.failed("a")  # a stale failure does not move past b
    assert e.current == "b"
    assert e.retry_after("b", httpx.ReadError("reset"), 1) is False  # may have arrived
    assert e.current == "a"


def test_a_list_is_loopback_only_when_every_url_is() -> None:
    assert is_loopback_url("http://127.0.0.1:1,http://localhost:2")
    assert not is_loopback_url("http://127.0.0.1:1,http://10.0.0.1:2")


def _handler(seen: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.port == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json={"host": request.headers["host"]})

    return httpx.MockTransport(handle)


def test_sync_failover_sends_an_unsent_request_to_the_next() -> None:
    seen: list[str] = []
    transport = SyncFailover(["http://h:1", "http://h:2"], _handler(seen))
    with httpx.Client(base_url="http://h:1/api/v1", transport=transport) as client:
        assert client.get("/x").json() == {"host": "h:2"}
        client.get("/y")
    assert seen == ["http://h:1/api/v1/x", "http://h:2/api/v1/x", "http://h:2/api/v1/y"]


def test_async_failover_raises_when_every_url_fails() -> None:
    seen: list[str] = []
    transport = AsyncFailover(["http://h:1", "http://h:1"], _handler(seen))

    async def go() -> None:
        async with httpx.AsyncClient(base_url="http://h:1", transport=transport) as client:
            await client.get("/x")

    try:
        asyncio.run(go())
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("no error")
    assert len(seen) == 2


class _Hanging(httpx.AsyncBaseTransport):
    """Port 1 is a cut link: /poll hangs, /beat times out; port 2 answers."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.url.port}{request.url.path}")
        if request.url.port == 1:
            if request.url.path == "/poll":
                await asyncio.Event().wait()  # held forever: only abandonment ends it
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(200)


def test_a_request_held_by_an_unreachable_coordinator_is_abandoned_when_another_moves_on() -> None:
    inner = _Hanging()
    transport = AsyncFailover(["http://h:1", "http://h:2"], inner)

    async def go() -> tuple[BaseException | None, int]:
        async with httpx.AsyncClient(base_url="http://h:1", transport=transport) as client:
            poll = asyncio.create_task(client.get("/poll"))
            await asyncio.sleep(0.01)
            with contextlib.suppress(httpx.ReadTimeout):  # may have arrived: not resent
                await client.get("/beat")
            abandoned = await asyncio.wait_for(asyncio.gather(poll, return_exceptions=True), 2)
            again = await client.get("/poll")  # asked again: of the next coordinator
            return abandoned[0], again.status_code

    abandoned, status = asyncio.run(go())
    assert isinstance(abandoned, httpx.ReadError) and "abandoned" in str(abandoned)
    assert status == 200
    assert inner.seen == ["1/poll", "1/beat", "2/poll"]


def test_heartbeat_read_timeout_ends_before_the_leases_it_keeps() -> None:
    from corral.worker._link import heartbeat_read_timeout

    # a coordinator's heartbeat interval is min(2, lease timeout / 4)
    for lease_timeout in (1.0, 3.0, 10.0, 60.0):
        interval = min(2.0, lease_timeout / 4)
        assert interval < heartbeat_read_timeout(interval) < lease_timeout
