"""`--scale KIND:OPTIONS`: parsing and checking, and what a launch is told (providers/base.py)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from corral.coordinator.providers import ScaleError, Start, build_provider, parse_scale
from corral.coordinator.scaling import Offer, Provider

KINDS = {"local": frozenset({"sandbox"}), "command": frozenset({"start", "stop"})}


def test_common_options_become_the_policy_provider(tmp_path: Path) -> None:
    p = build_provider(
        "local:min=1,max=4,idle_timeout=5s,join_timeout=2m,max_launches=2,startup=3,"
        "slots=2,labels=gpu=yes;site=lab,memory=2G,name=box",
        tmp_path,
    )
    assert p.name == "local:box"
    assert p.state_dir == tmp_path / "scale" / "local-box"
    assert p.policy == Provider(
        "local:box",
        Offer(2, {"gpu": "yes", "site": "lab"}, 2 * 2**30),
        max=4,
        min=1,
        idle_timeout=5.0,
        max_launches=2,
        join_timeout=120.0,
        startup=3.0,
    )


def test_defaults_and_kind_options() -> None:
    spec = parse_scale("command:start=/s.sh,stop=/t.sh", KINDS)
    assert spec.name == "command"
    assert spec.options.extra == {"start": "/s.sh", "stop": "/t.sh"}
    assert (spec.options.min, spec.options.max, spec.options.slots) == (0, 4, 1)
    assert parse_scale("local", KINDS).options.extra == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("cloud:max=1", "unknown provider 'cloud'; use one of command, local"),
        ("local:max=x", "max='x': not a whole number"),
        ("local:slots=0", "slots='0': at least 1"),
        ("local:idle_timeout=5q", "idle_timeout='5q'"),
        ("local:memory=lots", "memory='lots'"),
        ("local:max", "'max' must look like KEY=VALUE"),
        ("local:max=1,max=2", "max is given twice"),
        ("local:min=3,max=2", "min=3 is more than max=2"),
        ("local:labels=gpu", "label 'gpu' must look like KEY=VALUE"),
        ("local:start=x", "unknown option 'start'; local takes"),
    ],
)
def test_bad_values_say_what_is_wrong_in_one_line(text: str, says: str) -> None:
    with pytest.raises(ScaleError) as err:
        parse_scale(text, KINDS)
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_kind_checks_its_own_options(tmp_path: Path) -> None:
    with pytest.raises(ScaleError, match="sandbox= takes on or off"):
        build_provider("local:sandbox=maybe", tmp_path)
    with pytest.raises(ScaleError, match="unknown provider 'nope'"):
        build_provider("nope:max=1", tmp_path)


def test_start_keeps_the_token_off_argv() -> None:
    start = Start("l-1", "http://127.0.0.1:1", "crl_secret", None, 2, {"gpu": "yes"})
    args = start.worker_args()
    assert args == ["--server", "http://127.0.0.1:1", "--name", "l-1", "--slots", "2"] + [
        "--label",
        "gpu=yes",
    ]
    assert "crl_secret" not in " ".join(args)
    env = start.env()
    assert env["CORRAL_TOKEN"] == "crl_secret" and env["CORRAL_LAUNCH_ID"] == "l-1"
    assert env["CORRAL_LABELS"] == "gpu=yes" and env["CORRAL_SLOTS"] == "2"
    assert shlex.split(start.shell())[:3] == ["CORRAL_TOKEN=crl_secret", "exec", "corral"]
    joined = Start("l-2", "https://h:1", "crl_x", "corral1:abc", 1, {})
    assert joined.worker_args() == ["--name", "l-2", "--slots", "1"]
    assert "CORRAL_TOKEN" not in joined.env() and joined.env()["CORRAL_JOIN"] == "corral1:abc"
    assert shlex.split(joined.shell())[:3] == ["CORRAL_JOIN=corral1:abc", "exec", "corral"]
