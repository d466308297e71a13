"""The executable allowlist: which programs and scripts this worker agrees to run, by sha256.

The policy is `all` (anything runs) or `list` (only programs whose hash is on the worker's own
list, from `--allow sha256:HEX`, `--allow-inline sha256:HEX` and `--allow-file FILE`, or on the
coordinator's list, from `corral allow add [--allow-inline]`). The program is the file argv[0]
resolves to, in the task directory or on PATH; for a shell task it is /bin/sh itself. A worker
on a loopback coordinator defaults to `all`; a worker joining over the network defaults to
`list`.

Allowing an interpreter does not allow every script. When the program is an interpreter
(interpreters.py: by its file name, by argv[0]'s, or by being a copy of one on this machine's
PATH), the script it is given must be on the list too. The decision, in order:

    program not on the list                       -> not_allowed: PROGRAM sha256:...
    program's entry allows inline code            -> runs, whatever its arguments
    the environment can load other code (LD_PRELOAD, BASH_ENV, PYTHONPATH, PATH with
      the task directory or a relative entry, ...) -> not_allowed: environment ...
    not an interpreter                            -> runs
    code not in a file (-c, -e, -m, stdin, an option the reader does not know)
                                                  -> not_allowed: inline code (-c) for PROGRAM
    the script (resolved in the task directory)
      is missing or not on the list               -> not_allowed: script NAME sha256:...
    otherwise                                     -> runs

So `--shell` tasks (`/bin/sh -c LINE`) and function tasks (`python -m corral.worker.pyrunner`,
which unpickles and runs any code) need an interpreter entry with `--allow-inline`.

Startup files count as code too: Python runs .pth files from $HOME/.local (the task's), so a
task that ships one is refused; R needs --vanilla, zsh -f (interpreters.py).

What the list does not cover: what an allowed script itself does (it may run its arguments,
or import a module that the task ships beside it: Python puts the script's directory first
on sys.path, node looks in ./node_modules), and programs that run other programs (env, xargs,
find, make, timeout): allow only scripts and programs that run nothing the task chooses.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._net import is_loopback_url
from .interpreters import Runs, interpreter_of

__all__ = [
    "AllowPolicy",
    "Facts",
    "HashCache",
    "allow_mode",
    "env_problem",
    "find_interpreters",
    "is_loopback_url",
    "parse_hash",
    "read_allow_file",
    "refusal",
    "resolve_program",
    "resolve_script",
    "startup_problem",
]

_HEX = frozenset("0123456789abcdef")


def parse_hash(text: str) -> str:
    """`sha256:HEX` or bare HEX as 64 lowercase hex digits; raises ValueError otherwise."""
    value = text.strip().lower().removeprefix("sha256:")
    if len(value) != 64 or not set(value) <= _HEX:
        raise ValueError(f"{text.strip()!r} is not sha256:<64 hex digits>")
    return value


def read_allow_file(path: Path) -> tuple[set[str], set[str]]:
    """The hashes in a file and those of them allowed inline code: one a line, `sha256:HEX`
    or HEX, after `inline ` for an interpreter that may run code not in a file; `#` comments
    and a note after the hash allowed."""
    out, inline = set(), set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        marked = words[0] == "inline"  # first, so a note can never be taken for the mark
        try:
            sha = parse_hash(words[1] if marked and len(words) > 1 else words[0])
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
        out.add(sha)
        if marked:
            inline.add(sha)
    return out, inline


def allow_mode(server: str, allow_all: bool, enforce: bool, own: set[str]) -> str:
    """`all` or `list`: explicit flags first, then own hashes, then loopback means `all`."""
    if allow_all:
        return "all"
    if enforce or own:
        return "list"
    return "all" if is_loopback_url(server) else "list"


@dataclass
class AllowPolicy:
    """The worker's allowlist; `remote` is the coordinator's list, refreshed as it changes.
    The `*_inline` sets are the interpreters among them that may run code not in a file."""

    mode: str
    own: set[str] = field(default_factory=set)
    remote: set[str] = field(default_factory=set)
    own_inline: set[str] = field(default_factory=set)
    remote_inline: set[str] = field(default_factory=set)

    def allows(self, sha256: str) -> bool:
        """Whether a program or script with this hash may run."""
        return self.mode == "all" or sha256 in self.own or sha256 in self.remote

    def allows_inline(self, sha256: str) -> bool:
        """Whether this interpreter may run code not in a file (-c, -e, stdin, a shell line)."""
        return self.mode == "all" or sha256 in self.own_inline or sha256 in self.remote_inline


def resolve_program(argv0: str, cwd: Path, path_env: str) -> Path | None:
    """The file `argv0` runs: relative to the task directory when it has a slash, else on PATH."""
    if "/" in argv0:
        candidate = Path(argv0) if argv0.startswith("/") else cwd / argv0
    else:
        found = shutil.which(argv0, path=path_env)
        if found is None:
            return None
        candidate = Path(found)
        if not candidate.is_absolute():
            candidate = cwd / candidate
    try:
        resolved = candidate.resolve(strict=True)
    except OSError:
        return None
    return resolved if resolved.is_file() else None


class HashCache:
    """sha256 of files, remembered while their size, mtime and inode stay the same."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple[int, int, int], str]] = {}

    def sha256(self, path: Path) -> str:
        """The file's sha256, hashed once per version of the file."""
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        hit = self._known.get(path)
        if hit and hit[0] == key:
            return hit[1]
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        value = digest.hexdigest()
        self._known[path] = (key, value)
        return value


def resolve_script(arg: str, cwd: Path) -> Path | None:
    """The file a script argument names, relative to the task directory (never on PATH)."""
    try:
        resolved = (cwd / arg).resolve(strict=True)  # an absolute `arg` replaces `cwd`
    except (OSError, RuntimeError):
        return None
    return resolved if resolved.is_file() else None


def find_interpreters(path_env: str) -> dict[Path, str]:
    """The interpreters on PATH, resolved, by the kind their names say they are: a program
    whose hash matches one of them is that interpreter, whatever it is called."""
    found: dict[Path, str] = {}
    for folder in dict.fromkeys(path_env.split(os.pathsep)):
        if not folder.startswith("/"):
            continue
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            kind = interpreter_of(name)
            if kind is None:
                continue
            try:
                path = Path(folder, name).resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if path.is_file():
                found.setdefault(path, kind)
    return found


# Variables through which a process loads code that no argument names: the dynamic loader's,
# each interpreter's startup and library paths, bash's imported functions.
_CODE_VARS = frozenset(
    "BASH_ENV ENV SHELLOPTS BASHOPTS PS4 PROMPT_COMMAND ZDOTDIR IFS"
    " PYTHONSTARTUP PYTHONPATH PYTHONHOME PYTHONUSERBASE PYTHONINSPECT PYTHONSAFEPATH"
    " PERL5OPT PERL5LIB PERLLIB PERL5DB RUBYOPT RUBYLIB GEM_HOME GEM_PATH"
    " NODE_OPTIONS NODE_PATH NODE_REPL_EXTERNAL_MODULE PHPRC PHP_INI_SCAN_DIR"
    " R_PROFILE R_PROFILE_USER R_ENVIRON R_ENVIRON_USER R_LIBS R_LIBS_USER R_LIBS_SITE"
    " TCLLIBPATH TCL_LIBRARY AWKPATH AWKLIBPATH GCONV_PATH".split()
)
_CODE_PREFIXES = ("LD_", "BASH_FUNC_", "LUA_INIT", "LUA_PATH", "LUA_CPATH")


def env_problem(env: Mapping[str, str], cwd: Path) -> str | None:
    """Why a task's environment could make an allowed program run unlisted code, or None.
    PATH may not name the task directory or a relative folder (`""` means the current one):
    a script's `ls` would run what the task shipped."""
    for name in sorted(env):
        if name in _CODE_VARS or name.startswith(_CODE_PREFIXES):
            return f"{name} is set (it can load code the allowlist does not cover)"
    for folder in env.get("PATH", "").split(os.pathsep):
        inside = folder.startswith("/") and Path(os.path.normpath(folder)).is_relative_to(cwd)
        if not folder.startswith("/") or inside:
            return f"PATH names {folder or 'the current directory'!r} (programs there are unlisted)"
    return None


# Files in $HOME (the task directory) an interpreter runs on its own before any script:
# Python's user site-packages, whose .pth files and usercustomize run at every start.
_STARTUP = {"python": ".local"}


def startup_problem(kind: str | None, home_names: set[str]) -> str | None:
    """Why an interpreter would run code from files in $HOME (names in it given), or None."""
    name = _STARTUP.get(kind or "")
    if name is not None and name in home_names:
        return f"$HOME has {name} (the {kind} interpreter runs code from it at start)"
    return None


@dataclass(frozen=True)
class Facts:
    """What the guard found out about a command, for `refusal` to judge."""

    argv0: str
    program: Path | None  # the file argv[0] runs
    sha256: str | None
    kind: str | None = None  # the interpreter the program is, if it is one
    runs: Runs | None = None  # what the interpreter's arguments ask it to run
    script: Path | None = None  # runs.script resolved in the task directory
    script_sha256: str | None = None
    env: str | None = None  # env_problem's or startup_problem's answer


def refusal(policy: AllowPolicy, facts: Facts) -> str | None:
    """The error recorded on a refused task (`not_allowed: ...`), or None when it may run."""
    if policy.mode == "all":
        return None
    program, sha = facts.program, facts.sha256
    if program is None or sha is None:
        return f"not_allowed: {facts.argv0} (not found, so it cannot be checked)"
    if not policy.allows(sha):
        return f"not_allowed: {os.fspath(program)} sha256:{sha}"
    if policy.allows_inline(sha):
        return None  # an interpreter allowed to run anything
    if facts.env is not None:  # LD_PRELOAD and the like work on any program
        return f"not_allowed: environment: {facts.env}"
    if facts.kind is None:
        return None
    runs = facts.runs or Runs(inline="nothing it can read")
    if runs.script is None:
        return (
            f"not_allowed: inline code ({runs.inline}) for {os.fspath(program)}:"
            " its allowlist entry does not say --allow-inline"
        )
    if facts.script is None or facts.script_sha256 is None:
        return f"not_allowed: script {runs.script} (not found, so it cannot be checked)"
    if not policy.allows(facts.script_sha256):
        return f"not_allowed: script {runs.script} sha256:{facts.script_sha256}"
    return None
