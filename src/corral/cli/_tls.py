"""TLS options: `corral server --tls auto | --tls-cert/--tls-key`, `corral worker --join/--ca`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from ..client import ConfigError, CorralError, parse_join, save_pinned_ca
from ..coordinator.tls import TlsFiles, auto_tls, bind_refusal, server_names
from ._common import Fail, FailedWork

F = TypeVar("F", bound=Callable[..., Any])

_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)

_SERVER_OPTIONS = [
    click.option(
        "--tls",
        "tls_mode",
        type=click.Choice(["auto"]),
        default=None,
        help="auto: make a private CA and server certificate in the data directory.",
    ),
    click.option("--tls-cert", type=_FILE, default=None, help="Server certificate (PEM)."),
    click.option("--tls-key", type=_FILE, default=None, help="Its private key (PEM)."),
    click.option(
        "--tls-ca",
        type=_FILE,
        default=None,
        help="CA certificate served at /ca.pem for joining workers [default: --tls-cert].",
    ),
    click.option(
        "--tls-name",
        "tls_names",
        multiple=True,
        help="Another host name or address the auto certificate is valid for (repeatable).",
    ),
    click.option(
        "--insecure",
        is_flag=True,
        help="Allow plain HTTP on a non-loopback address (tokens travel in clear).",
    ),
]


def tls_server_options(fn: F) -> F:
    """The TLS options of `corral server`."""
    for option in reversed(_SERVER_OPTIONS):
        fn = option(fn)
    return fn


def server_tls(host: str, data: Path, opts: dict[str, Any]) -> TlsFiles | None:
    """Check the TLS options against the bind address; make or find the files to serve."""
    cert, key, mode = opts.get("tls_cert"), opts.get("tls_key"), opts.get("tls_mode")
    if mode and (cert or key):
        raise Fail("give either --tls auto or --tls-cert/--tls-key, not both")
    if bool(cert) != bool(key):
        raise Fail("--tls-cert and --tls-key go together")
    refusal = bind_refusal(host, bool(mode or cert), bool(opts.get("insecure")))
    if refusal:
        raise Fail(refusal)
    if mode == "auto":
        return auto_tls(data, server_names(host, opts.get("tls_names") or ()))
    if cert and key:
        return TlsFiles(cert, key, opts.get("tls_ca") or cert)
    return None


_WORKER_OPTIONS = [
    click.option(
        "--join",
        "join",
        envvar="CORRAL_JOIN",
        default=None,
        metavar="STRING",
        help="A join string from `corral token create --role worker --join`.",
    ),
    click.option(
        "--ca",
        "ca_file",
        envvar="CORRAL_CA",
        type=_FILE,
        default=None,
        help="Trust only this CA for an https coordinator.",
    ),
]


def worker_tls_options(fn: F) -> F:
    """The --join and --ca options of `corral worker`."""
    for option in reversed(_WORKER_OPTIONS):
        fn = option(fn)
    return fn


@dataclass(frozen=True)
class WorkerTarget:
    """Where a worker connects, with what token, trusting which CA."""

    server: str
    token: str | None
    ca_file: Path | None


def worker_target(
    server: str | None, token: str | None, opts: dict[str, Any], work_dir: Path
) -> WorkerTarget:
    """Resolve --server/--token/--ca, or a --join string (pinning the CA into `work_dir`)."""
    join, ca_file = opts.pop("join", None), opts.pop("ca_file", None)
    if not join:
        if not server:
            raise Fail("give --server URL (or CORRAL_URL), or --join STRING")
        return WorkerTarget(server, token, ca_file)
    try:
        parsed = parse_join(join)
        pinned = save_pinned_ca(parsed.url, parsed.ca_sha256, work_dir / "ca.pem")
    except ConfigError as exc:
        raise Fail(str(exc)) from exc
    except CorralError as exc:
        raise FailedWork(str(exc)) from exc
    return WorkerTarget(parsed.url, parsed.token, pinned)


__all__ = [
    "WorkerTarget",
    "server_tls",
    "tls_server_options",
    "worker_target",
    "worker_tls_options",
]
