"""`corral token create|list|revoke` and `corral audit`: identities and who did what."""

from __future__ import annotations

import time
from collections.abc import Sequence

import click
import httpx

from .. import protocol
from ..client import Client, make_join, pem_fingerprint, resolve
from ..protocol import INT32_MAX, MAX_SHARE, TokenInfo
from ._common import (
    Fail,
    FailedWork,
    client_errors,
    json_option,
    make_client,
    number,
    print_json,
    print_table,
    server_options,
)
from ._format import Column, ago, short
from ._ids import Candidate, choose


def parse_duration(text: str, option: str = "--expires") -> float:
    """Seconds in `90s`, `15m`, `1h`, `7d` or `2w`; Fail on anything else."""
    try:
        return protocol.parse_duration(text)
    except ValueError as exc:
        raise Fail(f"{option} {exc}") from exc


def _ca_fingerprint(server: str | None, token: str | None, url: str) -> str:
    """The fingerprint of the CA the coordinator serves, fetched over the trusted connection."""
    if not url.startswith("https://"):
        raise Fail(f"--join needs an https URL, not {url}; start the coordinator with --tls auto")
    target = resolve(server, token)
    try:
        response = httpx.get(target.url + "/ca.pem", verify=target.verify, timeout=10.0)
    except httpx.HTTPError as exc:
        raise FailedWork(f"cannot reach the coordinator at {target.url}: {exc}") from exc
    if response.status_code != 200:
        raise Fail("the coordinator serves no CA (/ca.pem); start it with --tls auto")
    return pem_fingerprint(response.content)


@click.group()
def token() -> None:
    """Create, list and revoke API tokens (admin)."""


@token.command("create")
@click.option(
    "--role",
    type=click.Choice(["admin", "submit", "worker", "metrics"]),
    required=True,
    help="What it may do.",
)
@click.option("--name", required=True, help="Who or what it is for.")
@click.option("--owner", default="", help="Identity its jobs belong to [default: the name].")
@click.option("--expires", default=None, metavar="DURATION", help="Lifetime: 90s, 15m, 1h, 7d.")
@click.option(
    "--share",
    default=None,
    metavar="WEIGHT",
    help="The owner's fair-share weight: 2 gets twice the slots of an owner with 1 [default: 1].",
)
@click.option(
    "--max-slots",
    default=None,
    metavar="N",
    help="The most slots the owner's tasks may run at once (0: no cap) [default: none].",
)
@click.option("--join", "join", is_flag=True, help="Print a worker join string instead.")
@click.option("--url", "join_url", default=None, help="URL workers should use [default: --server].")
@json_option
@server_options
@client_errors
def create(
    role: str,
    name: str,
    owner: str,
    expires: str | None,
    share: str | None,
    max_slots: str | None,
    join: bool,
    join_url: str | None,
    as_json: bool,
    server: str | None,
    token: str | None,
) -> None:
    """Make a token and print its secret (shown this once only)."""
    lifetime = parse_duration(expires) if expires is not None else None
    weight = number(share, "--share", 0, MAX_SHARE, whole=False)
    cap = number(max_slots, "--max-slots", 0, INT32_MAX, whole=True)
    fingerprint = None
    if join:
        if role != "worker":
            raise Fail("--join makes worker tokens: use --role worker")
        join_url = (join_url or resolve(server, token).url).rstrip("/")
        fingerprint = _ca_fingerprint(server, token, join_url)
    with make_client(server, token) as client:
        cap_slots = None if cap is None else int(cap)
        made = client.create_token(name, role, owner, lifetime, weight, cap_slots)
    if as_json:
        print_json(made)
        return
    click.echo(f"token {made.token.id} ({role}) created; its secret is shown only now", err=True)
    if join_url and fingerprint:
        click.echo(make_join(join_url, fingerprint, made.secret))
    else:
        click.echo(made.secret)


TOKEN_COLUMNS = (
    Column("id"),
    Column("name", flex=True),
    Column("role"),
    Column("state"),
    Column("owner", rank=2),
    Column("share", rank=2),
    Column("max slots", rank=2),
    Column("created", rank=1),
    Column("expires", rank=3),
)


def _state(t: TokenInfo, now: float) -> str:
    if t.revoked is not None:
        return "revoked"
    return "expired" if t.expires is not None and t.expires <= now else "active"


def token_rows(found: Sequence[TokenInfo], now: float) -> list[tuple[object, ...]]:
    """`corral token list` rows."""
    return [
        (t.id, t.name, t.role, _state(t, now), t.owner, f"{t.share:g}", _cap(t))
        + (ago(t.created, now), ago(t.expires, now))
        for t in found
    ]


def _cap(t: TokenInfo) -> object:
    return "-" if t.max_slots is None else t.max_slots


def find_token(client: Client, ref: str) -> str:
    """The id of the token `ref` names: its id, a unique prefix of it, or the name of a
    token still in use."""
    found = [
        Candidate(t.id, "token", t.name, (t.name,) if t.revoked is None else ())
        for t in client.tokens()
    ]
    return choose(ref, found, "token", "list them with `corral token list`").id


@token.command("list")
@json_option
@server_options
@client_errors
def list_(as_json: bool, server: str | None, token: str | None) -> None:
    """Every token: id, name, role, owner (with its fair share and cap), whether it works."""
    with make_client(server, token) as client:
        found = client.tokens()
    if as_json:
        print_json(found)
        return
    print_table(TOKEN_COLUMNS, token_rows(found, time.time()))


@token.command("revoke")
@click.argument("token_id", metavar="TOKEN")
@json_option
@server_options
@client_errors
def revoke(token_id: str, as_json: bool, server: str | None, token: str | None) -> None:
    """Revoke a token (its id, a prefix of it, or its name); it stops working at once."""
    with make_client(server, token) as client:
        done = client.revoke_token(find_token(client, token_id))
    if as_json:
        print_json(done)
    else:
        click.echo(f"token {done.id} ({done.name}) revoked")


@click.command()
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Newest entries.",
)
@json_option
@server_options
@client_errors
def audit(limit: int, as_json: bool, server: str | None, token: str | None) -> None:
    """Who submitted, killed, made or revoked tokens, or changed the allowlist, and when:
    the newest --limit entries, newest first."""
    with make_client(server, token) as client:
        entries = client.audit(0, limit, newest=True)
    if as_json:
        print_json(entries)
        return
    now = time.time()
    rows = [
        (ago(e.time, now), e.actor, e.action, short(e.target), e.detail, e.token_id)
        for e in entries
    ]
    print_table(AUDIT_COLUMNS, rows)


AUDIT_COLUMNS = (
    Column("time"),
    Column("actor"),
    Column("action"),
    Column("target"),
    Column("detail", rank=1, flex=True),
    Column("token", rank=2),
)


__all__ = ["audit", "parse_duration", "token"]
