"""The persistent channel: API calls as msgspec frames over one WebSocket (issue 18).

A worker (or client) opens `GET /api/v1/channel` as a WebSocket with its bearer token, then
sends calls and reads answers on it, many at once:

    Call    [id, method, path, body]     path under /api/v1 ("/workers/w1/lease"), body JSON
    Answer  [id, status, body, more]     what the same HTTP request would have answered
    Call    [id, "CANCEL", "", ""]       stop serving call `id` (a stream no longer read)

An answer whose body the handler streams (a job's events) comes in parts as they are made,
each an Answer with `more` set but the last: the events are pushed, one frame each.

The coordinator answers each call through the very route, access rules and handler that serve
the HTTP request (coordinator/channel.py), so the bodies are the HTTP bodies byte for byte
(JSON, errors as `{"error", "detail"}`); only the envelope is new. Answers come back in the
order they are ready, not the order asked: a lease call held for a long poll does not hold up
a heartbeat behind it. A held lease call answered the moment work exists is the push.

The envelope is MessagePack (one binary frame each way a call); the body inside stays JSON so
that the handlers decode it exactly as they decode an HTTP body. No I/O here: the codec, the
table of calls awaiting their answer, the URL and the reconnect delays are pure.

Rejected: re-encoding bodies as MessagePack. The handlers' JSON decode is the one place wire
input is validated (routes/_common.py); a second decoder would be a second set of rules.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

import msgspec

__all__ = [
    "CANCEL",
    "CHANNEL_MODES",
    "CHANNEL_PATH",
    "Answer",
    "Call",
    "ChannelMode",
    "Pending",
    "channel_url",
    "decode_answer",
    "decode_call",
    "encode_frame",
    "reconnect_delay",
]

CHANNEL_PATH = "/api/v1/channel"
CANCEL = "CANCEL"  # the method of a call that stops another
ChannelMode = Literal["auto", "ws", "http"]
CHANNEL_MODES: tuple[ChannelMode, ...] = ("auto", "ws", "http")


class Call(msgspec.Struct, array_like=True, frozen=True):
    """One request on the channel: `body` is the JSON an HTTP request would carry."""

    id: int
    method: str
    path: str
    body: bytes = b""


class Answer(msgspec.Struct, array_like=True, frozen=True):
    """The answer to call `id`: the HTTP status and body the same request would get, or a
    part of that body (`more`: parts follow)."""

    id: int
    status: int
    body: bytes = b""
    more: bool = False


_encoder = msgspec.msgpack.Encoder()
_calls = msgspec.msgpack.Decoder(Call)
_answers = msgspec.msgpack.Decoder(Answer)


def encode_frame(frame: Call | Answer) -> bytes:
    """A call or an answer as one binary WebSocket message."""
    return _encoder.encode(frame)


def decode_call(data: bytes) -> Call:
    """A call from a message; msgspec.DecodeError (ValidationError included) if it is none."""
    return _calls.decode(data)


def decode_answer(data: bytes) -> Answer:
    """An answer from a message; msgspec.DecodeError if it is none."""
    return _answers.decode(data)


def channel_url(base: str) -> str:
    """The channel's WebSocket URL at a coordinator's base URL (http -> ws, https -> wss)."""
    base = base.rstrip("/")
    scheme, sep, rest = base.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {base}")
    return ("wss" if scheme.lower() == "https" else "ws") + "://" + rest + CHANNEL_PATH


def reconnect_delay(failures: int, refused: bool) -> float:
    """Seconds before trying the channel again after `failures` failures in a row (1 for the
    first). `refused`: the coordinator answered the upgrade with an HTTP error (no channel
    there, or the token refused): calls go over HTTP meanwhile, so ask again rarely; else it
    could not be reached or the socket dropped: soon, as HTTP will be failing too."""
    n = max(failures, 1)
    if refused:
        return float(min(30 * 2 ** (n - 1), 300.0))
    return float(min(0.2 * 2 ** (n - 1), 15.0))


W = TypeVar("W")


class Pending(Generic[W]):
    """The calls sent on one socket and not yet answered, by id: whatever waits for each
    (a future, in practice). Ids are never reused on one socket, so a late answer to a call
    given up on (timed out, cancelled) finds nothing and is dropped."""

    def __init__(self) -> None:
        self._next = 0
        self._waiting: dict[int, W] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def open(self, waiter: W) -> int:
        """Register a call about to be sent; its id."""
        self._next += 1
        self._waiting[self._next] = waiter
        return self._next

    def peek(self, call_id: int) -> W | None:
        """The waiter of a call still being answered (a stream), kept."""
        return self._waiting.get(call_id)

    def settle(self, call_id: int) -> W | None:
        """The waiter of an answered call (None: unknown, or given up on), forgotten."""
        return self._waiting.pop(call_id, None)

    def drop_all(self) -> list[W]:
        """Every waiter still waiting (the socket is gone: their answers will not come)."""
        waiting = list(self._waiting.values())
        self._waiting.clear()
        return waiting
