"""Where a field of a job file is written: line numbers for errors (pure, no I/O).

Both scanners are forgiving: they only run once a file has parsed, to point an error at its line.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass

FieldPath = tuple[str | int, ...]


class _Locator:
    """Maps a field path to the line it is written on, and a line to the field written there."""

    def __init__(self) -> None:
        self.lines: dict[FieldPath, int] = {}
        self.context: dict[int, FieldPath] = {}

    def add(self, path: FieldPath, line: int) -> None:
        self.lines.setdefault(path, line)

    def line_of(self, path: FieldPath) -> int | None:
        if not path:
            return self.lines.get(())
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


_TOML_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_TOML_DOTTED = rf"{_TOML_KEY}(?:[ \t]*\.[ \t]*{_TOML_KEY})*"
_TOML_KEY_LINE = re.compile(rf"[ \t]*({_TOML_DOTTED})[ \t]*=")
_TOML_HEADER = re.compile(rf"[ \t]*(\[\[?)[ \t]*({_TOML_DOTTED})[ \t]*\]")
_TOML_PART = re.compile(_TOML_KEY)


def _key_parts(dotted: str) -> tuple[str, ...]:
    return tuple(_unquote(part) for part in _TOML_PART.findall(dotted))


def _unquote(part: str) -> str:
    if part.startswith("'"):
        return part[1:-1]
    if not part.startswith('"'):
        return part
    try:
        value = json.loads(part)
    except ValueError:
        return part[1:-1]
    return value if isinstance(value, str) else part[1:-1]


def _skip_quoted(line: str, start: int) -> int:
    quote = line[start]
    pos = start + 1
    while pos < len(line):
        if line[pos] == "\\" and quote == '"':
            pos += 2
        elif line[pos] == quote:
            return pos + 1
        else:
            pos += 1
    return pos


def _scan_toml_line(line: str, delim: str | None, depth: int) -> tuple[str | None, int, int]:
    """Follow one line: return the open multi-line string delimiter and bracket depth after it,
    and how many arrays or inline tables start directly inside a depth-1 array (elements)."""
    pos = elements = 0
    while pos < len(line):
        if delim is not None:
            end = line.find(delim, pos)
            if end < 0:
                return delim, depth, elements
            pos, delim = end + 3, None
            continue
        char = line[pos]
        if char == "#":
            break
        if line.startswith('"""', pos) or line.startswith("'''", pos):
            pos, delim = pos + 3, line[pos : pos + 3]
        elif char in "\"'":
            pos = _skip_quoted(line, pos)
        else:
            elements += int(depth == 1 and char in "[{")
            depth += int(char in "[{") - int(char in "]}")
            pos += 1
    return delim, depth, elements


class _TomlScan:
    """Line-based TOML walker tracking table headers, arrays of tables and `key =` lines."""

    def __init__(self) -> None:
        self.loc = _Locator()
        self.table: FieldPath = ()
        self.current: FieldPath = ()
        self.arrays: dict[FieldPath, int] = {}
        self.delim: str | None = None
        self.depth = 0
        self.elements = 0
        self.value: FieldPath | None = None

    def feed(self, lineno: int, line: str) -> None:
        if self.delim is None and self.depth <= 0:
            self.depth = self.elements = 0
            self._statement(lineno, line)
        self.loc.context[lineno] = self.current
        self.delim, self.depth, elements = _scan_toml_line(line, self.delim, self.depth)
        if self.value is not None:
            for index in range(self.elements, self.elements + elements):
                self.loc.add(self.value + (index,), lineno)
        self.elements += elements

    def _statement(self, lineno: int, line: str) -> None:
        self.value = None
        header = _TOML_HEADER.match(line)
        if header is not None:
            self._header(lineno, _key_parts(header.group(2)), header.group(1) == "[[")
            return
        key = _TOML_KEY_LINE.match(line)
        if key is None:
            self.current = self.table
            return
        path = self.table
        for part in _key_parts(key.group(1)):
            path += (part,)
            self.loc.add(path, lineno)
        self.current = self.value = path

    def _header(self, lineno: int, names: tuple[str, ...], is_array: bool) -> None:
        path = self._resolve(names[:-1]) + names[-1:]
        self.loc.add(path, lineno)
        if is_array:
            index = self.arrays.get(path, 0)
            self.arrays[path] = index + 1
            path += (index,)
            self.loc.add(path, lineno)
        self.table = self.current = path

    def _resolve(self, names: tuple[str, ...]) -> FieldPath:
        """Turn header names into a path, indexing into the latest element of arrays of tables."""
        path: FieldPath = ()
        for name in names:
            path += (name,)
            if path in self.arrays:
                path += (self.arrays[path] - 1,)
        return path


def toml_locator(text: str) -> _Locator:
    scan = _TomlScan()
    for lineno, line in enumerate(text.split("\n"), 1):
        scan.feed(lineno, line)
    return scan.loc


@dataclass
class _Frame:
    is_object: bool
    key: str | int | None = None
    expect_key: bool = False


_JSON_SCALAR = re.compile(r'[^\s,:\[\]{}"]+')


class JsonScan:
    """Token walker over (possibly invalid) JSON, recording the line of each key and element."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.newlines = [match.start() for match in re.finditer("\n", text)]
        self.loc = _Locator()
        self.stack: list[_Frame] = []

    def path(self) -> FieldPath:
        return tuple(frame.key for frame in self.stack if frame.key is not None)

    def run(self, stop: int) -> None:
        pos = 0
        while pos < stop:
            char = self.text[pos]
            if char == '"':
                pos = self._string(pos)
                continue
            if char in "{[":
                self._value(pos)
                self.stack.append(_Frame(True, None, True) if char == "{" else _Frame(False, 0))
            elif char in "}]":
                if self.stack:
                    self.stack.pop()
            elif char == ",":
                self._comma()
            elif char not in " \t\r\n:":
                self._value(pos)
                match = _JSON_SCALAR.match(self.text, pos)
                pos = match.end() if match is not None else pos + 1
                continue
            pos += 1

    def _line(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1

    def _string(self, start: int) -> int:
        end = start + 1
        while end < len(self.text) and self.text[end] != '"':
            end += 2 if self.text[end] == "\\" else 1
        end = min(end + 1, len(self.text))
        top = self.stack[-1] if self.stack else None
        if top is not None and top.is_object and top.expect_key:
            top.key, top.expect_key = _unquote(self.text[start:end]), False
            self.loc.add(self.path(), self._line(start))
        else:
            self._value(start)
        return end

    def _value(self, pos: int) -> None:
        if not self.stack:
            self.loc.add((), self._line(pos))
        elif not self.stack[-1].is_object:
            self.loc.add(self.path(), self._line(pos))

    def _comma(self) -> None:
        if not self.stack:
            return
        top = self.stack[-1]
        if top.is_object:
            top.key, top.expect_key = None, True
        elif isinstance(top.key, int):
            top.key += 1


def json_locator(text: str) -> _Locator:
    scan = JsonScan(text)
    scan.run(len(text))
    return scan.loc


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def fmt_path(path: FieldPath) -> str:
    """Render a field path as `tasks[2].argv` or `sweep.params.start`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
        out += f".{name}" if out else name
    return out or "(root)"
