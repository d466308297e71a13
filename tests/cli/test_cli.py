"""The `corral` command line through click's CliRunner: argument errors, configuration and
reachability errors, and the placeholders of `submit --each-line`.

Everything runs in process except `real_server`, a coordinator subprocess for the few tests
that need an answer from one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import httpx
import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from corral.cli import cli
from corral.cli._security import token_rows
from corral.jobfile import each_line_argv, substitute
from corral.protocol import TokenInfo

NO_SUCH = "0" * 32


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No coordinator from the environment or the user's config; empty XDG dirs."""
    for name in list(os.environ):
        if name.startswith("CORRAL_"):
            monkeypatch.delenv(name)
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        path = tmp_path / "xdg" / name.lower()
        path.mkdir(parents=True)
        monkeypatch.setenv(name, str(path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def corral(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin)


def one_error_line(result: Result, code: int) -> str:
    """The single `corral: ...` line a failed command prints on stderr."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("corral: "), lines[0]
    assert result.stdout == ""
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# arguments


def test_submit_without_a_command() -> None:
    line = one_error_line(corral("submit"), 2)
    assert "no command" in line
    one_error_line(corral("submit", "--", ""), 2)


def test_submit_with_a_missing_input(isolated: Path) -> None:
    missing = isolated / "nowhere" / "data.csv"
    line = one_error_line(corral("submit", "--input", str(missing), "--", "wc", "-l"), 2)
    assert str(missing) in line


@pytest.mark.parametrize(
    ("flag", "value"), [("--env", "FOO"), ("--env", "=bar"), ("--requires", "os")]
)
def test_key_value_flags_need_an_equals_sign(flag: str, value: str) -> None:
    line = one_error_line(corral("submit", flag, value, "--", "echo"), 2)
    assert flag in line and repr(value) in line


@pytest.mark.parametrize(
    "args",
    [
        ("submit", "--priority", "abc", "--", "echo"),
        ("submit", "--priority", "1000001", "--", "echo"),
        ("token", "create", "--role", "submit", "--name", "x", "--share", "-1"),
        ("token", "create", "--role", "submit", "--name", "x", "--share", "0"),
        ("token", "create", "--role", "submit", "--name", "x", "--max-slots", "1.5"),
        ("server", "--fair-share-half-life", "soon"),
    ],
)
def test_fair_share_numbers_are_checked_before_anything_is_sent(args: tuple[str, ...]) -> None:
    flag, value = args[-4:-2] if args[0] == "submit" else args[-2:]
    line = one_error_line(corral(*args), 2)
    assert f"{flag} {value!r}" in line, line


def test_token_rows_show_the_owner_s_share_and_cap() -> None:
    made = TokenInfo("tok_1", "alice", "submit", "alice", 0.0, None, None, None, 2.0, 8)
    plain = TokenInfo("tok_2", "bob", "submit", "bob", 0.0, None, None)
    (a, b) = token_rows([made, plain], 10.0)
    assert a[5:7] == ("2", 8) and b[5:7] == ("1", "-")


def test_unknown_option_is_a_usage_error() -> None:
    result = corral("submit", "--no-such-flag", "--", "echo")
    assert result.exit_code == 2
    assert "--no-such-flag" in result.stderr


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_job_file_with_a_toml_syntax_error(isolated: Path) -> None:
    job = write(isolated / "job.toml", 'name = "x"\n\n[[tasks]]\nargv = ["a", "b"\n')
    line = one_error_line(corral("submit", "--file", job), 2)
    assert f"{job}:4:" in line
    assert "syntax" in line


def test_job_file_with_an_unknown_field(isolated: Path) -> None:
    job = write(
        isolated / "job.toml", '[[tasks]]\nargv = ["a"]\n\n[[tasks]]\nargv = ["b"]\ncmd = 1\n'
    )
    line = one_error_line(corral("submit", "--file", job), 2)
    assert f"{job}:6:" in line
    assert "tasks[1].cmd" in line


def test_json_job_file_with_an_unknown_field(isolated: Path) -> None:
    job = write(
        isolated / "job.json", '{\n  "tasks": [\n    {"argv": ["a"],\n     "urgency": 1}\n  ]\n}\n'
    )
    line = one_error_line(corral("submit", "--file", job), 2)
    assert f"{job}:4:" in line
    assert "urgency" in line


def test_job_file_from_stdin_with_an_error() -> None:
    line = one_error_line(corral("submit", "--file", "-", stdin='[[tasks]]\nargv = "a"\n'), 2)
    assert "<stdin>:2:" in line and "argv" in line


def test_job_file_that_does_not_exist(isolated: Path) -> None:
    line = one_error_line(corral("submit", "--file", str(isolated / "nope.toml")), 2)
    assert "nope.toml" in line


def test_job_file_and_a_command_together(isolated: Path) -> None:
    job = write(isolated / "job.toml", '[[tasks]]\nargv = ["a"]\n')
    one_error_line(corral("submit", "--file", job, "--", "echo"), 2)


# where the coordinator is


@pytest.mark.parametrize(
    "args",
    [("submit", "--", "echo", "hi"), ("ps",), ("show", NO_SUCH), ("workers",), ("wait", NO_SUCH)],
)
def test_unreachable_coordinator(monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("CORRAL_URL", url)
    line = one_error_line(corral(*args), 1)
    assert url in line
    assert "corral up" in line


def test_unreachable_coordinator_named_by_flag() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    line = one_error_line(corral("ps", "--server", url), 1)
    assert url in line


@pytest.mark.parametrize("args", [("submit", "--", "echo", "hi"), ("ps",), ("show", NO_SUCH)])
def test_no_coordinator_configured(args: tuple[str, ...]) -> None:
    line = one_error_line(corral(*args), 2)
    assert "`corral up`" in line
    assert "CORRAL_URL" in line


def test_unreadable_config_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = isolated / "broken.json"
    config.write_text("{not json")
    monkeypatch.setenv("CORRAL_CONFIG", str(config))
    line = one_error_line(corral("ps"), 2)
    assert str(config) in line


# submit --each-line placeholders


@pytest.mark.parametrize(
    ("arg", "line", "expected"),
    [
        ("{}", "dir/file.tar.gz", "dir/file.tar.gz"),
        ("{.}", "dir/file.tar.gz", "dir/file.tar"),
        ("{/}", "dir/file.tar.gz", "file.tar.gz"),
        ("{//}", "dir/file.tar.gz", "dir"),
        ("{/.}", "dir/file.tar.gz", "file.tar"),
        ("{//}", "file.txt", "."),
        ("{.}", "dir.d/file", "dir.d/file"),
        ("{/.}", "dir/.hidden", ".hidden"),
        ("out/{/.}.png", "in/a b.jpg", "out/a b.png"),
        ("{}:{}", "x", "x:x"),
        ("{}{/}", "a/b", "a/bb"),
        ("{/}", "d/has{}braces", "has{}braces"),
        ("{.}", "{/}.txt", "{/}"),
        ("{x}", "line", "{x}"),
        ("plain", "line", "plain"),
    ],
)
def test_substitute(arg: str, line: str, expected: str) -> None:
    assert substitute(arg, line) == expected


def test_each_line_argv() -> None:
    assert each_line_argv(["wc", "-l"], "a.txt") == ["wc", "-l", "a.txt"]
    assert each_line_argv(["convert", "{}", "{.}.png"], "x.jpg") == ["convert", "x.jpg", "x.png"]
    assert each_line_argv(["echo", "{/}", "done"], "d/f") == ["echo", "f", "done"]
    # braces that are no placeholder: the line is still appended, the braces kept
    assert each_line_argv(["awk", "{print $1}"], "data.txt") == ["awk", "{print $1}", "data.txt"]
    assert each_line_argv(["jq", "{a: .b}", "{}"], "f.json") == ["jq", "{a: .b}", "f.json"]


lines = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), min_size=1
)
plain_args = st.lists(st.text(st.characters(blacklist_characters="{}"), max_size=8), min_size=1)


@given(line=lines)
def test_placeholders_insert_the_line_verbatim(line: str) -> None:
    path = PurePosixPath(line)
    assert substitute("{}", line) == line
    assert substitute("{/}", line) == path.name
    assert substitute("{//}", line) == str(path.parent)
    assert substitute("<{}>", line) == f"<{line}>"


@given(argv=plain_args, line=lines)
def test_without_placeholders_the_line_is_appended(argv: list[str], line: str) -> None:
    assert each_line_argv(argv, line) == [*argv, line]
    assert [substitute(a, line) for a in argv] == argv


# a real coordinator


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A `corral server` subprocess: (url, admin token); always stopped afterwards."""
    data = tmp_path_factory.mktemp("server")
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["XDG_CONFIG_HOME"] = str(data / "config")  # it writes the client config there
    log = (data / "server.log").open("wb")
    argv = [sys.executable, "-m", "corral", "server", "--port", str(port), "--data", str(data)]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        give_up = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (data / "server.log").read_text()
            assert time.monotonic() < give_up, "the coordinator did not start in 30 s"
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        yield url, (data / "admin.token").read_text().strip()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def served(real_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    url, token = real_server
    monkeypatch.setenv("CORRAL_URL", url)
    monkeypatch.setenv("CORRAL_TOKEN", token)
    return url


@pytest.mark.parametrize(
    "args",
    [
        ("show", NO_SUCH),
        ("ps", NO_SUCH),
        ("kill", NO_SUCH),
        ("logs", NO_SUCH),
        ("wait", NO_SUCH),
        ("fetch", NO_SUCH, "--to", "out"),
    ],
)
def test_unknown_id_is_a_usage_error(served: str, args: tuple[str, ...]) -> None:
    line = one_error_line(corral(*args), 2)
    assert NO_SUCH in line
    assert "corral ps" in line


def test_a_known_id_is_found(served: str) -> None:
    submitted = corral("submit", "--name", "probe", "--", "echo", "hi")
    assert submitted.exit_code == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    shown = corral("show", job_id)
    assert shown.exit_code == 0, shown.stderr
    assert job_id in shown.stdout and "probe" in shown.stdout
    killed = corral("kill", job_id)
    assert (killed.exit_code, killed.stdout.strip()) == (0, f"{job_id[:12]} killed")


def test_a_wrong_token_is_refused(served: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_TOKEN", "crl_wrong")
    line = one_error_line(corral("ps"), 2)
    assert "unauthorized" in line


def test_the_coordinator_refuses_a_bad_requirement(served: str) -> None:
    line = one_error_line(corral("submit", "--requires", "colour=red", "--", "echo"), 2)
    assert "colour" in line and "invalid_argument" in line
