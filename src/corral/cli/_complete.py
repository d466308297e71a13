"""Shell completion of ids (click's): jobs and tasks from the coordinator, best effort.

Completion runs on every Tab, so it asks once, with a short timeout, and says nothing when
the coordinator is not there: an empty list, never an error on the user's prompt.
"""

from __future__ import annotations

from typing import Any

import click
from click.shell_completion import CompletionItem

from ..client import Client
from ._format import short

TIMEOUT = 2.0


def id_suggestions(client: Client, incomplete: str) -> list[tuple[str, str]]:
    """(id, help) pairs: the newest jobs for nothing typed, else ids that start with it."""
    prefix = incomplete.lower()
    if not prefix:
        return [(short(j.id), f"job {j.name} ({j.status})") for j in client.jobs(20)]
    if any(c not in "0123456789abcdef" for c in prefix) or len(prefix) > 32:
        return []
    found = client.find_ids(prefix, None, 50)
    width = max(len(prefix), 12)
    return [(m.id[:width], f"{m.kind} {m.name}".strip()) for m in found]


def complete_ids(ctx: click.Context, _param: Any, incomplete: str) -> list[CompletionItem]:
    """Click's shell_complete callback for a job or task id argument."""
    try:
        params = ctx.params
        with Client(params.get("server"), params.get("token"), TIMEOUT) as client:
            pairs = id_suggestions(client, incomplete)
    except Exception:  # completion must never break the shell: no suggestions instead
        return []
    return [CompletionItem(value, help=text) for value, text in dict(pairs).items()]


__all__ = ["complete_ids", "id_suggestions"]
