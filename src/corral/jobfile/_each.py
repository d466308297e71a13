"""`submit --each-line` and `--limit`: one task per line of text, and limit values (pure).

The CLI reads the lines from stdin; the dashboard's submit form from a text box. Both build
their tasks here, so a line means the same thing to each.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from ..protocol import LIMIT_KEYS, parse_size

__all__ = ["BYTE_LIMITS", "each_line_argv", "limit_value", "substitute", "task_lines"]

_PLACEHOLDER = re.compile(r"\{(/\.|//|/|\.|)\}")

#: limits measured in bytes, which also take sizes such as 200M or 2G
BYTE_LIMITS = frozenset({"file_size", "memory", "output_size"})


def substitute(arg: str, line: str) -> str:
    """GNU Parallel's placeholders: {} {.} {/} {//} {/.}, replaced in one pass (so braces in
    the line itself are left alone)."""
    path = PurePosixPath(line)
    stem = line[: -len(path.suffix)] if path.suffix else line
    values = {"": line, ".": stem, "/": path.name, "//": str(path.parent), "/.": path.stem}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], arg)


def each_line_argv(argv: list[str], line: str) -> list[str]:
    """argv for one stdin line: placeholders replaced, or the line appended when there are none
    (other braces, as in `awk '{print $1}'`, are not placeholders)."""
    if any(_PLACEHOLDER.search(a) for a in argv):
        return [substitute(a, line) for a in argv]
    return [*argv, line]


def task_lines(text: str) -> list[str]:
    """The lines that make tasks: stripped, blank ones skipped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def limit_value(key: str, text: str) -> float:
    """One limit's value: seconds, a count, or bytes (sizes like 200M allowed); ValueError
    saying what is wrong, without the option's name."""
    if key not in LIMIT_KEYS:
        raise ValueError(f"{key}: unknown limit (known: {', '.join(LIMIT_KEYS)})")
    try:
        value = float(parse_size(text)) if key in BYTE_LIMITS else float(text)
    except ValueError:
        raise ValueError(f"{key}={text}: not a number") from None
    if not value >= 0:
        raise ValueError(f"{key}={text}: must not be negative")
    return value
