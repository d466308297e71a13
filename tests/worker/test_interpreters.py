"""Reading interpreters' command lines: the script they run, or why the code is inline."""

from __future__ import annotations

import pytest

from corral.worker.interpreters import GRAMMARS, Runs, interpreter_of, what_runs


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("python3.11", "python"),
        ("python3", "python"),
        ("python", "python"),
        ("pypy3.9", "python"),
        ("python3.12-dbg", "python"),
        ("sh", "sh"),
        ("dash", "sh"),
        ("bash", "sh"),
        ("bash-static", "sh"),
        ("zsh", "zsh"),
        ("perl5.36.0", "perl"),
        ("ruby3.1", "ruby"),
        ("nodejs", "node"),
        ("node18", "node"),
        ("lua5.4", "lua"),
        ("luajit", "lua"),
        ("php8.2", "php"),
        ("tclsh8.6", "tcl"),
        ("Rscript", "Rscript"),
        ("R", "R"),
        ("gawk", "awk"),
        ("mawk", "awk"),
        ("busybox", "busybox"),
    ]
    + [(name, None) for name in ("shred", "nodemon", "luac", "true", "perldoc", "rscript", "")],
)
def test_interpreter_of(name: str, kind: str | None) -> None:
    assert interpreter_of(name) == kind
    assert kind is None or kind in GRAMMARS


def script(name: str) -> Runs:
    return Runs(script=name)


def inline(why: str) -> Runs:
    return Runs(inline=why)


UNREAD = "which the allowlist cannot read"


@pytest.mark.parametrize(
    ("kind", "args", "runs"),
    [
        # python: -W/-X take a value; -c, -m, -i and stdin are code not in a file
        ("python", ["job.py", "-c", "x"], script("job.py")),
        ("python", ["-u", "-B", "job.py"], script("job.py")),
        ("python", ["-uB", "job.py"], script("job.py")),
        ("python", ["-W", "ignore", "job.py"], script("job.py")),
        ("python", ["-Wignore", "-X", "utf8", "job.py"], script("job.py")),
        ("python", ["-X", "job.py", "evil.py"], script("evil.py")),  # -X's value is no script
        ("python", ["--check-hash-based-pycs", "never", "job.py"], script("job.py")),
        ("python", ["--", "-job.py"], script("-job.py")),
        ("python", ["-c", "print(1)"], inline("-c")),
        ("python", ["-uc", "print(1)"], inline("-c")),
        ("python", ["-m", "http.server"], inline("-m")),
        ("python", ["-i", "job.py"], inline("-i")),
        ("python", ["-"], inline("code on stdin (-)")),
        ("python", [], inline("code on stdin (no script given)")),
        ("python", ["-W"], inline("an option without its value")),
        ("python", ["-Z", "job.py"], inline(f"option -Z, {UNREAD}")),
        ("python", ["--frobnicate", "job.py"], inline(f"option --frobnicate, {UNREAD}")),
        # shells: -o takes a value, +o too; - ends the options; -c, -s, -i, -l are code
        ("sh", ["job.sh", "a"], script("job.sh")),
        ("sh", ["-e", "-x", "job.sh"], script("job.sh")),
        ("sh", ["-o", "pipefail", "+o", "posix", "job.sh"], script("job.sh")),
        ("sh", ["-eu", "+x", "-", "job.sh"], script("job.sh")),
        ("sh", ["--norc", "--posix", "job.sh"], script("job.sh")),
        ("sh", ["-c", "echo hi"], inline("-c")),
        ("sh", ["-ec", "echo hi"], inline("-c")),
        ("sh", ["-s"], inline("-s")),
        ("sh", ["-l", "job.sh"], inline("-l")),
        ("sh", ["--login", "job.sh"], inline("--login")),
        ("sh", ["--rcfile", "x", "job.sh"], inline("--rcfile")),
        ("sh", ["-"], inline("code on stdin (no script given)")),
        ("zsh", ["-f", "job.zsh"], script("job.zsh")),
        ("zsh", ["job.zsh"], inline("without -f zsh runs .zshenv from the task directory")),
        # perl: -I takes a value; -l/-0 take digits; -i/-F/-x the rest; -e/-E/-M/-m code
        ("perl", ["-w", "job.pl"], script("job.pl")),
        ("perl", ["-I", "lib", "job.pl"], script("job.pl")),
        ("perl", ["-Ilib", "-l", "job.pl"], script("job.pl")),
        ("perl", ["-0777", "-pi.bak", "job.pl", "data"], script("job.pl")),
        ("perl", ["-F:", "-lan", "job.pl"], script("job.pl")),
        ("perl", ["-le", "print qx(id)"], inline("-e")),  # -l takes digits, not the e
        ("perl", ["-l0e", "code"], inline("-e")),
        ("perl", ["-E", "say 1"], inline("-E")),
        ("perl", ["-MPOSIX", "job.pl"], inline("-M")),
        ("perl", ["-S", "job.pl"], inline("-S")),
        ("perl", ["-d:Trace", "job.pl"], inline("-d")),
        # ruby: -I/-E take values; -e, -r, -C (another directory), -S (PATH) are code
        ("ruby", ["-w", "-I", "lib", "job.rb"], script("job.rb")),
        ("ruby", ["-W0", "--disable-gems", "job.rb"], script("job.rb")),
        ("ruby", ["--encoding", "utf-8", "job.rb"], script("job.rb")),
        ("ruby", ["-e", "puts 1"], inline("-e")),
        ("ruby", ["-rsocket", "job.rb"], inline("-r")),
        ("ruby", ["-C", "/tmp", "job.rb"], inline("-C")),
        # node: -e/-p/-r and the loaders and debuggers are code
        ("node", ["job.js"], script("job.js")),
        ("node", ["--no-warnings", "--max-old-space-size=512", "job.js"], script("job.js")),
        ("node", ["--title", "x", "job.js"], script("job.js")),
        ("node", ["-e", "1"], inline("-e")),
        ("node", ["-p", "1"], inline("-p")),
        ("node", ["--require", "./x", "job.js"], inline("--require")),
        ("node", ["--import=./x.mjs", "job.js"], inline("--import")),
        ("node", ["--inspect=0.0.0.0:9229", "job.js"], inline("--inspect")),
        ("node", ["--weird", "a", "job.js"], inline(f"option --weird, {UNREAD}")),
        # lua, php, tcl
        ("lua", ["job.lua"], script("job.lua")),
        ("lua", ["-e", "os.execute('id')"], inline("-e")),
        ("lua", ["-lsocket", "job.lua"], inline("-l")),
        ("php", ["job.php"], script("job.php")),
        ("php", ["-n", "-f", "job.php"], script("job.php")),
        ("php", ["-r", "system('id');"], inline("-r")),
        ("php", ["-d", "auto_prepend_file=x.php", "job.php"], inline("-d")),
        ("tcl", ["job.tcl"], script("job.tcl")),
        ("tcl", ["-encoding", "utf-8", "job.tcl"], script("job.tcl")),
        ("tcl", ["-x"], inline(f"option -x, {UNREAD}")),
        # R reads .Rprofile from the task directory unless --vanilla
        ("Rscript", ["--vanilla", "job.R"], script("job.R")),
        ("Rscript", ["--vanilla", "--default-packages=stats", "job.R"], script("job.R")),
        (
            "Rscript",
            ["job.R"],
            inline("without --vanilla R runs .Rprofile and .Renviron from the task directory"),
        ),
        ("Rscript", ["--vanilla", "-e", "1"], inline("-e")),
        ("R", ["--vanilla", "-f", "job.R"], script("job.R")),
        ("R", ["--vanilla", "--file=job.R"], script("job.R")),
        ("R", ["--vanilla", "CMD", "INSTALL"], inline("'CMD', not a script it reads")),
        # awk: the program is text unless -f names it; -v/-F take values
        ("awk", ["-F", ":", "-f", "job.awk", "data"], script("job.awk")),
        ("awk", ["-v", "x=1", "-fjob.awk"], script("job.awk")),
        ("awk", ["--file=job.awk"], script("job.awk")),
        (
            "awk",
            ["-f", "job.awk", "-f", "evil.awk"],
            inline("-f twice: only one script can be checked"),
        ),
        ("awk", ["-f", "job.awk", "-e", "BEGIN{}"], inline("-e")),
        ("awk", ["{print}", "data"], inline("a program given as text")),
        # a multi-call binary runs any applet: nothing it is given is a script
        ("busybox", ["sh", "-c", "id"], inline("'sh', not a script it reads")),
    ],
)
def test_what_runs(kind: str, args: list[str], runs: Runs) -> None:
    assert what_runs(kind, args) == runs
