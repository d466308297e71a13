"""Operations on the coordinator-wide executable allowlist (sans-IO, like `_core`)."""

from __future__ import annotations

import msgspec

from ..protocol import AllowAdd, AllowEntry
from ._core import Call, Op, check

_JSON = {"content-type": "application/json"}


def allow_list() -> Op[list[AllowEntry]]:
    """Every allowed program hash."""
    reply = yield Call("GET", "/allow")
    return msgspec.json.decode(check(reply).content, type=list[AllowEntry])


def allow_add(sha256: str, note: str = "", allow_inline: bool = False) -> Op[AllowEntry]:
    """Allow a program by its sha256 (an interpreter: with inline code, or scripts only)."""
    body = msgspec.json.encode(AllowAdd(sha256, note, allow_inline))
    reply = yield Call("POST", "/allow", headers=_JSON, content=body)
    return msgspec.json.decode(check(reply).content, type=AllowEntry)


def allow_remove(sha256: str) -> Op[None]:
    """Take a program hash off the allowlist."""
    reply = yield Call("DELETE", f"/allow/{sha256}")
    check(reply)


__all__ = ["allow_add", "allow_list", "allow_remove"]
