"""Wire models of the coordinator-wide executable allowlist."""

from __future__ import annotations

import msgspec


class AllowAdd(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Allow a program by its sha256 (64 hex digits, optionally prefixed `sha256:`)."""

    sha256: str
    note: str = ""
    allow_inline: bool = False  # an interpreter that may run code not in a file (-c, -e)


class AllowEntry(msgspec.Struct):
    """One allowed program."""

    sha256: str
    note: str
    added: float
    added_by: str
    allow_inline: bool = False  # an interpreter that may also run code not in a file
