"""What an interpreter's command line asks it to run: a script file, or code not in a file.

`interpreter_of` names the interpreter a program file is, from its file name with any version
suffix dropped (`python3.11` -> python, `perl5.36.0` -> perl, `bash-static` -> sh).
`what_runs` reads the arguments the way that interpreter does: options first (each one's
value taken as that interpreter takes it), then the script: the first operand, or the file
an option names (`php -f`, `awk -f`, `R --file=`). Code that is not in a file is `inline`:

    -c code (python, sh)   -e code (perl, ruby, node, lua, Rscript, php -r)   code on stdin
    -m module, -r/-M lib   a module or library loaded by name runs code no file argument names
    -i, --login, ...       interactive mode and login shells read code from stdin or $HOME
    an unknown option      it may take a value, so which operand is the script is unknown

The reading is conservative: anything it cannot read for certain counts as inline, never as a
script. That is the one direction in which a mistake is safe: taking an option's value for the
script would let an allowed file's name smuggle code (`perl -le 'print qx(id)'` with a file of
that name), while refusing an odd but harmless command line only costs an `--allow-inline`.

Rejected: asking the interpreter itself (`python -c 'import sys; print(sys.argv)'`-style
probes) would run the very program being checked, and each version parses a little
differently; a table of the options each one documents is checkable by reading it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Runs", "interpreter_of", "what_runs"]


@dataclass(frozen=True)
class Runs:
    """What a command line runs: `script` (the argument naming the file) or `inline` (why the
    code is not in a file, e.g. `-c code`)."""

    script: str | None = None
    inline: str | None = None


@dataclass(frozen=True)
class Grammar:
    """How one interpreter reads its options. Letters not listed are unknown (so inline)."""

    flags: str = ""  # short options with no value; may be grouped (-uB)
    valued: str = ""  # short options with a value, attached (-Wall) or next (-W all)
    code: str = ""  # short options meaning the code is not in a file (-c, -e, -m)
    rest: str = ""  # short options whose value is the rest of the argument (perl -i.bak)
    digits: str = ""  # short options followed by attached digits only (perl -l, -0777)
    script: str = ""  # short options whose value is the script (awk -f FILE)
    long_flags: frozenset[str] = frozenset()
    long_valued: frozenset[str] = frozenset()
    long_code: frozenset[str] = frozenset()
    long_script: frozenset[str] = frozenset()
    long_any: bool = False  # every --name or --name=value takes no separate value (Rscript)
    words: frozenset[str] = frozenset()  # single-dash words with a value (tclsh -encoding)
    plus: bool = False  # shells: +o name, +e are options too
    dash_ends: bool = False  # shells: `-` ends the options (elsewhere it means stdin)
    first_is_code: bool = False  # awk: without -f the first operand is the program text
    operand_script: bool = True  # R: False, its script comes only from -f/--file
    needs: frozenset[str] = frozenset()  # one of these options must be given...
    needs_why: str = ""  # ...because without it the interpreter reads code from here


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SHELL = Grammar(
    flags="abefhkmnprtuvxBCEHPT",
    valued="oO",
    code="cisl",  # -s and -i read stdin; -l is a login shell, which runs $HOME/.profile
    long_flags=_words("norc noprofile posix restricted verbose version help noediting"),
    long_code=_words("login rcfile init-file debugger"),
    plus=True,
    dash_ends=True,
)
_R_NEEDS = frozenset({"--vanilla"})
_R_WHY = "without --vanilla R runs .Rprofile and .Renviron from the task directory"
_AWK = Grammar(
    flags="bcCghMNnOPrsStV",
    valued="FvW",
    code="eEilD",
    rest="dLop",
    script="f",
    long_flags=_words(
        "version help posix traditional lint sandbox characters-as-bytes re-interval bignum"
        " copyright optimize no-optimize use-lc-numeric non-decimal-data csv"
        " dump-variables profile pretty-print"
    ),
    long_valued=_words("field-separator assign"),
    long_code=_words("source include load exec debug"),
    long_script=_words("file"),
    first_is_code=True,
)

GRAMMARS: dict[str, Grammar] = {
    "python": Grammar(
        flags="bBdEhIOPqsSuvVxR?",
        valued="WX",
        code="cmi",
        long_flags=_words("help version help-env help-xoptions help-all"),
        long_valued=_words("check-hash-based-pycs"),
    ),
    "sh": _SHELL,
    # zsh always runs $ZDOTDIR/.zshenv (the task directory's, as HOME) unless -f
    "zsh": Grammar(
        flags="abdefghjkmnprtuvwxyABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        valued="o",
        code="cisl",
        plus=True,
        dash_ends=True,
        long_flags=_words("version help"),
        needs=frozenset({"-f"}),
        needs_why="without -f zsh runs .zshenv from the task directory",
    ),
    "perl": Grammar(
        flags="acnpstTuUvwWXh",
        valued="I",
        code="eEmMdSCD",  # -C and -D read an attached value in ways not worth guessing
        rest="iFxV",
        digits="l0",
    ),
    "ruby": Grammar(
        flags="acdhlnpsvwyU",
        valued="IE",
        code="erCS",  # -C changes directory, -S searches PATH: the script is elsewhere
        rest="xFK",
        digits="W0T",
        long_flags=_words("version verbose copyright help disable-gems yjit jit"),
        long_valued=_words("encoding external-encoding internal-encoding enable disable"),
    ),
    "node": Grammar(
        flags="hvc",  # -c checks the syntax without running
        valued="C",
        code="epri",
        long_flags=_words(
            "help version check no-warnings no-deprecation throw-deprecation"
            " trace-deprecation trace-warnings pending-deprecation enable-source-maps"
            " experimental-vm-modules expose-gc preserve-symlinks preserve-symlinks-main"
            " trace-uncaught abort-on-uncaught-exception"
        ),
        long_valued=_words("title conditions input-type stack-size max-old-space-size"),
        long_code=_words(
            "eval print require import loader experimental-loader interactive inspect"
            " inspect-brk inspect-wait env-file env-file-if-exists run test watch"
        ),
    ),
    "lua": Grammar(flags="vEW", valued="O", code="elijb"),  # -j, -b: luajit's
    "php": Grammar(
        flags="hilmnqsvwHe",
        script="f",
        code="rBREFadczSt",  # -c/-d/-z change the ini or load extensions: code too
        long_flags=_words("help version ini no-php-ini info modules syntax-check"),
        long_script=_words("file"),
        long_code=_words(
            "php-ini define run process-begin process-code process-file process-end"
            " interactive zend-extension server docroot"
        ),
    ),
    "tcl": Grammar(words=_words("-encoding")),
    "Rscript": Grammar(code="e", long_any=True, needs=_R_NEEDS, needs_why=_R_WHY),
    "R": Grammar(
        code="e",
        script="f",
        long_any=True,
        long_script=_words("file"),
        operand_script=False,
        needs=_R_NEEDS,
        needs_why=_R_WHY,
    ),
    "awk": _AWK,
    # a multi-call binary runs any of its applets (a shell among them): nothing to read
    "busybox": Grammar(operand_script=False),
}

_NAMES = {
    **dict.fromkeys(("python", "pypy"), "python"),
    **dict.fromkeys(("sh", "bash", "dash", "ksh", "mksh", "ash", "yash", "posh", "rbash"), "sh"),
    "zsh": "zsh",
    "perl": "perl",
    "ruby": "ruby",
    **dict.fromkeys(("node", "nodejs"), "node"),
    **dict.fromkeys(("lua", "luajit"), "lua"),
    "php": "php",
    **dict.fromkeys(("tclsh", "wish", "jimsh"), "tcl"),
    "Rscript": "Rscript",
    "R": "R",
    **dict.fromkeys(("awk", "gawk", "mawk", "nawk"), "awk"),
    **dict.fromkeys(("busybox", "toybox"), "busybox"),
}
# a name, then nothing or a version and suffixes: python3.11, perl5.36.0, bash-static;
# but not a longer word (shred, nodemon, luac)
_NAME = re.compile(r"([A-Za-z]+?)(?:[\d.\-][\w.\-]*)?")


def interpreter_of(filename: str) -> str | None:
    """The interpreter (a key of GRAMMARS) a program's file name says it is, or None."""
    match = _NAME.fullmatch(filename)
    return _NAMES.get(match.group(1)) if match else None


class _Inline(Exception):
    """Reading stopped: the code is not (certainly) in a file."""


@dataclass
class _Reader:
    grammar: Grammar
    args: Sequence[str]
    at: int = 0
    script: str | None = None
    seen: set[str] = field(default_factory=set)

    def take(self, attached: str) -> str:
        """An option's value: attached, else the next argument."""
        if attached:
            return attached
        if self.at >= len(self.args):
            raise _Inline("an option without its value")
        self.at += 1
        return self.args[self.at - 1]

    def set_script(self, option: str, value: str) -> None:
        if self.script is not None:
            raise _Inline(f"{option} twice: only one script can be checked")
        self.script = value

    def long(self, arg: str) -> None:
        g = self.grammar
        name, eq, value = arg[2:].partition("=")
        self.seen.add(f"--{name}")
        if name in g.long_code:
            raise _Inline(f"--{name}")
        if name in g.long_script:
            self.set_script(f"--{name}", value if eq else self.take(""))
        elif name in g.long_valued:
            if not eq:
                self.take("")
        elif not (name in g.long_flags or g.long_any):
            raise _Inline(f"option --{name}, which the allowlist cannot read")

    def short(self, arg: str) -> None:
        g, body, j = self.grammar, arg[1:], 0
        while j < len(body):
            c, j = body[j], j + 1
            self.seen.add(f"-{c}")
            if c in g.code:
                raise _Inline(f"{arg[0]}{c}")
            if c in g.script:
                self.set_script(f"-{c}", self.take(body[j:]))
                return
            if c in g.valued:
                self.take(body[j:])
                return
            if c in g.rest:
                return
            if c in g.digits:
                j = _skip_digits(body, j)
            elif c not in g.flags:
                raise _Inline(f"option {arg[0]}{c}, which the allowlist cannot read")

    def options(self) -> list[str]:
        """Read the options; the operands that follow them."""
        g = self.grammar
        while self.at < len(self.args):
            arg = self.args[self.at]
            self.at += 1
            if arg == "--" or (arg == "-" and g.dash_ends):
                break
            if arg == "-":
                raise _Inline("code on stdin (-)")
            if arg in g.words:
                self.take("")
            elif arg.startswith("--"):
                self.long(arg)
            elif len(arg) > 1 and (arg[0] == "-" or (g.plus and arg[0] == "+")):
                self.short(arg)
            else:
                self.at -= 1
                break
        return list(self.args[self.at :])


def _skip_digits(body: str, j: int) -> int:
    """Past the digits attached to perl's -0/-l or ruby's -W/-0 (-0777, -0x1F)."""
    if body[j : j + 1] == "x":
        j += 1
        while j < len(body) and body[j] in "0123456789abcdefABCDEF":
            j += 1
        return j
    while j < len(body) and body[j] in "01234567":
        j += 1
    return j


def what_runs(kind: str, args: Sequence[str]) -> Runs:
    """What `kind` (a key of GRAMMARS) runs when given `args` (argv without argv[0])."""
    g = GRAMMARS[kind]
    reader = _Reader(g, args)
    try:
        operands = reader.options()
    except _Inline as exc:
        return Runs(inline=str(exc))
    if g.needs and not reader.seen & g.needs:
        return Runs(inline=g.needs_why)
    if reader.script is not None:
        return Runs(script=reader.script)
    if not operands:
        return Runs(inline="code on stdin (no script given)")
    if g.first_is_code:
        return Runs(inline="a program given as text")
    if not g.operand_script:
        return Runs(inline=f"{operands[0]!r}, not a script it reads")
    return Runs(script=operands[0])
