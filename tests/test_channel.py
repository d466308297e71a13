"""The channel without sockets: its frames, the table of calls awaiting answers, its URL and
delays (protocol/_channel.py), the HTTP scope a call becomes (coordinator/channel.py), and the
client end's multiplexing and failures (_channel.py) over an in-memory connection."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

import corral._channel
from corral._channel import Channel
from corral._failover import Endpoints
from corral.client._core import SSEDecoder
from corral.coordinator.channel import CHANNEL_SCOPE, call_scope
from corral.protocol import (
    Answer,
    Call,
    Event,
    Pending,
    channel_url,
    decode_answer,
    decode_call,
    encode_frame,
    reconnect_delay,
)


@given(
    st.integers(0, 2**63 - 1),
    st.sampled_from(["GET", "POST"]),
    st.text(max_size=80),
    st.binary(max_size=300),
)
def test_frames_round_trip(call_id: int, method: str, path: str, body: bytes) -> None:
    assert decode_call(encode_frame(Call(call_id, method, path, body))) == Call(
        call_id, method, path, body
    )
    assert decode_answer(encode_frame(Answer(call_id, 409, body))) == Answer(call_id, 409, body)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"not msgpack", encode_frame(Answer(1, 200))])
def test_a_call_that_is_not_one_is_a_decode_error(data: bytes) -> None:
    # an answer has 3 fields, not a call's 4 (body defaults): [1, 200] is not [id, method, ...]
    with pytest.raises(msgspec.DecodeError):
        decode_call(data)


def test_pending_ids_are_unique_and_a_late_answer_finds_nothing() -> None:
    pending: Pending[str] = Pending()
    a, b = pending.open("a"), pending.open("b")
    assert a != b and len(pending) == 2
    assert pending.settle(b) == "b"  # out of order
    assert pending.settle(b) is None  # answered twice, or given up on
    assert pending.drop_all() == ["a"]
    assert len(pending) == 0 and pending.open("c") not in (a, b)


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/api/v1/channel"),
        ("https://farm.example:443/", "wss://farm.example:443/api/v1/channel"),
        ("HTTPS://[::1]:9", "wss://[::1]:9/api/v1/channel"),
    ],
)
def test_channel_url(base: str, url: str) -> None:
    assert channel_url(base) == url


def test_channel_url_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="not an http"):
        channel_url("ftp://x")


@given(st.integers(1, 50), st.booleans())
def test_reconnect_delays_grow_and_are_capped(failures: int, refused: bool) -> None:
    delay = reconnect_delay(failures, refused)
    assert delay <= reconnect_delay(failures + 1, refused)
    assert 0.2 <= delay <= (300 if refused else 15)
    # an upgrade refused (no channel there) is asked about far less often than a drop
    assert reconnect_delay(failures, True) > reconnect_delay(failures, False)


def test_a_call_becomes_the_http_request_it_stands_for() -> None:
    ws_scope = {
        "type": "websocket",
        "scheme": "wss",
        "path": "/api/v1/channel",
        "headers": [
            (b"authorization", b"Bearer s3cret"),
            (b"sec-websocket-key", b"x"),
            (b"upgrade", b"websocket"),
        ],
        "client": ("127.0.0.1", 5),
        "server": ("127.0.0.1", 6),
    }
    scope = call_scope(ws_scope, "GET", "/jobs/j1/tasks?offset=5", 0)
    assert scope["type"] == "http" and scope["scheme"] == "https"
    assert scope["path"] == "/api/v1/jobs/j1/tasks" and scope["query_string"] == b"offset=5"
    headers = dict(scope["headers"])
    assert headers[b"authorization"] == b"Bearer s3cret"  # checked again on every call
    assert b"upgrade" not in headers and headers[b"content-length"] == b"0"
    assert scope[CHANNEL_SCOPE] is True


class FakeSocket:
    """A connection in memory: frames sent are kept, answers are fed by the test."""

    def __init__(self) -> None:
        self.sent: list[Call] = []
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    async def send(self, data: bytes) -> None:
        self.sent.append(decode_call(data))

    async def close(self) -> None:
        self.closed = True
        self.inbox.put_nowait(None)

    def answer(self, call: Call, status: int, body: bytes) -> None:
        self.inbox.put_nowait(encode_frame(Answer(call.id, status, body)))

    def __aiter__(self) -> FakeSocket:
        return self

    async def __anext__(self) -> bytes:
        data = await self.inbox.get()
        if data is None:
            raise StopAsyncIteration
        return data


async def _open(urls: list[str]) -> tuple[Channel, FakeSocket, asyncio.Task[None]]:
    channel = Channel("auto", Endpoints(urls), "tok", False, 5.0)
    sock = FakeSocket()
    reader = asyncio.create_task(channel._serve(sock, urls[0]))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert await channel.usable()
    return channel, sock, reader


async def _sent(sock: FakeSocket, n: int) -> list[Call]:
    while len(sock.sent) < n:
        await asyncio.sleep(0)
    return sock.sent


@pytest.mark.timeout(10)
def test_answers_out_of_order_and_errors_as_httpx_raises_them() -> None:
    async def run() -> None:
        channel, sock, reader = await _open(["http://a"])
        held = asyncio.create_task(channel.post("/workers/w/lease", b"{}", 30))
        beat = asyncio.create_task(channel.post("/workers/w/heartbeat", b"{}", 30))
        lease_call, beat_call = await _sent(sock, 2)
        sock.answer(beat_call, 200, b'{"cancel":[]}')  # the heartbeat overtakes the lease
        assert await beat == b'{"cancel":[]}'
        assert not held.done()
        sock.answer(lease_call, 409, b'{"error":"conflict","detail":"stale"}')
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await held
        assert caught.value.response.status_code == 409
        assert caught.value.response.json()["error"] == "conflict"
        await sock.close()
        await reader

    asyncio.run(run())


@pytest.mark.timeout(10)
def test_a_call_in_flight_when_the_socket_dies_is_an_answer_lost() -> None:
    async def run() -> None:
        channel, sock, reader = await _open(["http://a"])
        results = asyncio.create_task(channel.post("/workers/w/results", b"{}", 30))
        await _sent(sock, 1)
        await sock.close()  # the coordinator went away
        await reader
        with pytest.raises(httpx.ReadError):  # as a reset HTTP connection: sent again later
            await results
        assert not await channel.usable()  # auto: HTTP until the channel is back

    asyncio.run(run())


@pytest.mark.timeout(10)
def test_silence_drops_the_socket_and_moves_to_the_next_coordinator() -> None:
    async def run() -> None:
        channel, sock, reader = await _open(["http://a", "http://b"])
        with pytest.raises(httpx.ReadTimeout):
            await channel.post("/workers/w/heartbeat", b"{}", 0.05)
        assert channel.endpoints.current == "http://b"
        assert not await channel.usable()
        await reader
        assert sock.closed

    asyncio.run(run())


@pytest.mark.timeout(10)
def test_the_channel_follows_an_http_failover() -> None:
    async def run() -> None:
        channel, sock, reader = await _open(["http://a", "http://b"])
        channel.endpoints.failed("http://a")  # an HTTP request found a gone
        assert not await channel.usable()  # so the socket to a is given up, to reopen at b
        await reader
        assert sock.closed

    asyncio.run(run())


@pytest.mark.timeout(10)
def test_ws_mode_waits_for_the_channel_then_gives_up_as_unreachable() -> None:
    async def run() -> None:
        channel = Channel("ws", Endpoints(["http://a"]), None, False, 0.05)
        with pytest.raises(httpx.ConnectError):
            await channel.usable()
        assert not await Channel("http", Endpoints(["http://a"]), None, False, 1).usable()

    asyncio.run(run())


@pytest.mark.timeout(10)
def test_a_stream_comes_in_parts_and_one_left_unread_is_cancelled() -> None:
    async def run() -> None:
        channel, sock, reader = await _open(["http://a"])
        stream = channel.stream(Call(0, "GET", "/jobs/j/events?after=0"), 5)
        first = asyncio.create_task(anext(stream))
        (call,) = await _sent(sock, 1)
        sock.inbox.put_nowait(encode_frame(Answer(call.id, 200, b"id: 1\n\n", more=True)))
        assert (await first).body == b"id: 1\n\n"
        sock.inbox.put_nowait(encode_frame(Answer(call.id, 200, b"id: 2\n\n", more=True)))
        assert (await anext(stream)).body == b"id: 2\n\n"
        await stream.aclose()  # the reader has what it wanted
        cancel = (await _sent(sock, 2))[1]
        assert (cancel.id, cancel.method) == (call.id, "CANCEL")
        # a part still on its way finds nobody and is dropped
        sock.inbox.put_nowait(encode_frame(Answer(call.id, 200, b"id: 3\n\n", more=True)))
        held = asyncio.create_task(channel.post("/x", b"{}", 5))
        later = (await _sent(sock, 3))[2]
        sock.answer(later, 200, b"{}")
        assert await held == b"{}"
        await sock.close()
        await reader

    asyncio.run(run())


def test_pushed_event_text_gives_the_same_events_however_it_is_cut() -> None:
    events = [Event(i, "j", f"t{i}", "succeeded", 0, 1.5) for i in (1, 2)]
    text = "".join(
        f"id: {e.seq}\nevent: task\ndata: {msgspec.json.encode(e).decode()}\n\n" for e in events
    )
    text += ": keepalive\n\nevent: end\ndata: {}\n\n"
    for cut in range(len(text) + 1):
        decoder = SSEDecoder()
        got = [*decoder.feed_text(text[:cut]), *decoder.feed_text(text[cut:])]
        assert got == events and decoder.done, cut


@pytest.mark.timeout(10)
def test_an_upgrade_refused_leaves_calls_on_http_and_asks_again_rarely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[str] = []
    delays: list[float] = []

    async def refuse(url: str, **_: object) -> None:
        tried.append(url)
        if len(tried) > 2:
            raise asyncio.CancelledError  # enough: stop the keeper
        raise InvalidStatus(Response(404, "Not Found", Headers(), b'{"error":"not_found"}'))

    def delay(failures: int, refused: bool) -> float:
        delays.append(reconnect_delay(failures, refused))
        return 0.0

    async def run() -> None:
        monkeypatch.setattr(corral._channel, "connect", refuse)
        monkeypatch.setattr(corral._channel, "reconnect_delay", delay)
        channel = Channel("auto", Endpoints(["http://a:1"]), "tok", False, 5.0)
        channel.start()
        with pytest.raises(asyncio.CancelledError):
            await channel._keeper  # type: ignore[misc]
        assert tried == ["ws://a:1/api/v1/channel"] * 3
        assert delays == [30.0, 60.0]  # no channel there: asked again rarely
        assert not await channel.usable()  # auto: every call over HTTP meanwhile

    asyncio.run(run())
