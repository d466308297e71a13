"""What every CLI command shares: finding the client, printing, and one-line errors."""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click
import msgspec

from ..client import ApiError, Client, ConfigError, CorralError, NotFoundError, Unreachable
from ._format import Column, render

F = TypeVar("F", bound=Callable[..., Any])

USAGE = 2  # bad arguments, bad files, unknown ids
FAILED = 1  # work failed, or the coordinator could not be reached


class Fail(click.ClickException):
    """A usage error: one line on stderr, then exit 2."""

    exit_code = USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"corral: {self.message}", err=True)


class FailedWork(Fail):
    """Work failed or the coordinator is unreachable: one line on stderr, then exit 1."""

    exit_code = FAILED


def server_options(fn: F) -> F:
    """--server and --token, as on every command that talks to a coordinator."""
    fn = click.option("--token", envvar="CORRAL_TOKEN", help="Bearer token.")(fn)
    fn = click.option("--server", envvar="CORRAL_URL", help="Coordinator URL.")(fn)
    return fn


def json_option(fn: F) -> F:
    """--json for scripts."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def client_errors(fn: F) -> F:
    """Turn client errors into one line and the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise Fail(str(exc)) from exc
        except Unreachable as exc:
            raise FailedWork(f"{exc}; {unreachable_hint(str(exc))}") from exc
        except NotFoundError as exc:
            raise Fail(f"{exc.detail}; list ids with `corral ps`") from exc
        except ApiError as exc:
            kind = Fail if exc.status < 500 else FailedWork
            raise kind(f"the coordinator refused: {exc.detail} ({exc.code})") from exc
        except CorralError as exc:
            raise FailedWork(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def unreachable_hint(message: str) -> str:
    """What to do when the coordinator cannot be reached, from the error's text."""
    if "certificate verify failed" in message.lower():
        return (
            "its certificate is not trusted: set CORRAL_CA to the coordinator's CA"
            " certificate (`corral server --tls auto` prints where it is)"
        )
    return "is it running? start one with `corral up`"


def number(text: str | None, flag: str, lowest: float, highest: float, whole: bool) -> float | None:
    """An option's number (None when not given), from `lowest` (excluded when 0 and not
    `whole`) to `highest`; anything else is a one-line usage error naming the flag."""
    if text is None:
        return None
    kind = "a whole number" if whole else "a number"
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    low_ok = value is not None and (value >= lowest if whole or lowest else value > lowest)
    if value is None or not low_ok or not value <= highest:
        above = f"from {lowest:g}" if whole or lowest else "above 0"
        raise Fail(f"{flag} {text!r}: give {kind} {above} up to {highest:g}")
    return value


def key_values(values: tuple[str, ...], flag: str) -> dict[str, str]:
    """KEY=VALUE options as a dict; anything else is a usage error naming the flag."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Fail(f"{flag} {item!r} must look like KEY=VALUE")
        out[key] = value
    return out


def make_client(server: str | None, token: str | None) -> Client:
    """A client for the coordinator named by flags, env vars or the `corral up` config."""
    return Client(server, token)


def print_json(value: Any) -> None:
    """Structs, lists and dicts as indented JSON on stdout."""
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def print_table(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> None:
    """A table that fits the terminal's width (COLUMNS, else 80 when not a terminal)."""
    width = shutil.get_terminal_size((80, 24)).columns
    for line in render(columns, list(rows), width):
        click.echo(line)
