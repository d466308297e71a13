"""scheduler.unmet / fits / requirement_problem: properties over requirements and capabilities.

Examples of each requirement key live in test_policies.py; these tests check the rules that
must hold for any input.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.coordinator.scheduler import fits, requirement_problem, unmet
from corral.protocol import parse_size

KNOWN = ("os", "arch", "sandbox", "min_cpus", "min_memory", "min_disk", "gpus", "cpus")
KNOWN += ("programs", "python")

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=8,
)
#: whatever a worker might report, well-formed or not
any_caps = st.dictionaries(
    st.sampled_from(
        ("os", "arch", "sandbox", "cpus", "memory_free", "disk_free", "gpus", "slots")
        + ("programs", "python", "labels", "env", "hostname")
    )
    | names,
    json_values,
    max_size=8,
)
numbers = st.integers(min_value=0, max_value=10**6).map(str)
versions = st.lists(st.integers(0, 20), min_size=1, max_size=3).map(
    lambda parts: ".".join(map(str, parts))
)
sizes = st.tuples(st.integers(0, 4096), st.sampled_from(["", "K", "M", "G", "KiB", "MB"])).map(
    lambda t: f"{t[0]}{t[1]}"
)
#: requirement values that pass requirement_problem, by key
VALID: dict[str, st.SearchStrategy[str]] = {
    "os": names,
    "arch": names,
    "sandbox": names,
    "min_cpus": numbers,
    "gpus": numbers,
    "cpus": st.integers(1, 64).map(str),
    "min_memory": sizes,
    "min_disk": sizes,
    "programs": st.lists(names, min_size=1, max_size=3).map(",".join),
    "python": st.sampled_from(["", ">=", "<", "==", "!=", "<=", ">"]).flatmap(
        lambda op: versions.map(lambda v: op + v)
    ),
}


@st.composite
def valid_requires(draw: st.DrawFn) -> dict[str, str]:
    keys = draw(st.lists(st.sampled_from(sorted(VALID)), unique=True, max_size=4))
    out = {k: draw(VALID[k]) for k in keys}
    for prefix in draw(st.lists(st.sampled_from(["label.", "env."]), max_size=2)):
        out[prefix + draw(names)] = draw(st.just("*") | names)
    return out


# requirement_problem


@pytest.mark.parametrize("key", KNOWN)
def test_every_known_key_is_understood(key: str) -> None:
    assert requirement_problem(key) is None


@given(key=st.sampled_from(sorted(VALID)), data=st.data())
def test_valid_values_are_accepted(key: str, data: st.DataObject) -> None:
    assert requirement_problem(key, data.draw(VALID[key])) is None


@given(key=names.map(lambda n: "no_such_" + n))
def test_unknown_keys_are_named_with_the_known_ones(key: str) -> None:
    problem = requirement_problem(key, "1")
    assert problem is not None
    assert repr(key) in problem
    assert all(k in problem for k in KNOWN)
    assert "label.NAME" in problem and "env.NAME" in problem


@given(name=names, value=st.text(max_size=5))
def test_labels_and_env_take_any_value_but_need_a_name(name: str, value: str) -> None:
    for prefix in ("label.", "env."):
        assert requirement_problem(prefix + name, value) is None
        assert requirement_problem(prefix, value) is not None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("min_cpus", "lots"),
        ("min_cpus", "1.5"),
        ("min_cpus", "-1"),
        ("gpus", ""),
        ("cpus", "0"),
        ("cpus", "two"),
        ("min_memory", "4 apples"),
        ("min_disk", "-1G"),
        ("python", "three"),
        ("python", ">=3.x"),
        ("programs", " , "),
    ],
)
def test_malformed_values_are_refused(key: str, value: str) -> None:
    problem = requirement_problem(key, value)
    assert problem is not None and key in problem


# unmet and fits


@given(caps=any_caps)
def test_no_requirements_fit_anything(caps: dict[str, Any]) -> None:
    assert unmet({}, caps) == []
    assert fits({}, caps)


@given(requires=valid_requires(), caps=any_caps)
def test_fits_is_exactly_no_unmet_reasons(requires: dict[str, str], caps: dict[str, Any]) -> None:
    reasons = unmet(requires, caps)  # never raises, whatever the worker reported
    assert fits(requires, caps) == (reasons == [])
    assert len(reasons) <= len(requires)
    assert all(isinstance(r, str) and r for r in reasons)
    assert not any(r.startswith("unknown requirement") for r in reasons)


@given(a=valid_requires(), b=valid_requires(), caps=any_caps)
def test_each_requirement_is_judged_on_its_own(
    a: dict[str, str], b: dict[str, str], caps: dict[str, Any]
) -> None:
    b = {k: v for k, v in b.items() if k not in a}
    assert unmet({**a, **b}, caps) == unmet(a, caps) + unmet(b, caps)
    assert fits({**a, **b}, caps) == (fits(a, caps) and fits(b, caps))


@given(want=st.integers(0, 1000), have=st.integers(0, 1000))
def test_minimums_are_at_least(want: int, have: int) -> None:
    assert fits({"min_cpus": str(want)}, {"cpus": have}) == (have >= want)
    assert fits({"gpus": str(want)}, {"gpus": have}) == (have >= want)
    assert fits({"cpus": str(max(want, 1))}, {"slots": have}) == (have >= max(want, 1))


@given(want=sizes, have=st.integers(0, 2**42))
def test_memory_and_disk_minimums_read_sizes(want: str, have: int) -> None:
    ok = have >= parse_size(want)
    assert fits({"min_memory": want}, {"memory_free": have}) == ok
    assert fits({"min_disk": want}, {"disk_free": have}) == ok


@given(want=names, have=json_values)
def test_equality_keys_compare_as_text(want: str, have: Any) -> None:
    for key in ("os", "arch", "sandbox"):
        assert fits({key: want}, {key: have}) == (str(have) == want)
        assert fits({key: want}, {}) == (want == "None")


@given(wanted=st.lists(names, min_size=1, max_size=4), have=st.lists(names, max_size=6))
def test_programs_must_all_be_present(wanted: list[str], have: list[str]) -> None:
    ok = set(wanted) <= set(have)
    requires = {"programs": ",".join(wanted)}
    assert fits(requires, {"programs": have}) == ok
    assert fits(requires, {"programs": {p: f"/usr/bin/{p}" for p in have}}) == ok
    assert not fits(requires, {"programs": "not a list"})
    if not ok:
        (reason,) = unmet(requires, {"programs": have})
        assert all(p in reason for p in set(wanted) - set(have))


@given(name=names, value=names, table=st.dictionaries(names, names, max_size=4))
def test_labels_and_env(name: str, value: str, table: dict[str, str]) -> None:
    for prefix, field in (("label.", "labels"), ("env.", "env")):
        caps = {field: table}
        assert fits({prefix + name: "*"}, caps) == (name in table)
        assert fits({prefix + name: value}, caps) == (table.get(name) == value)
        assert not fits({prefix + name: "*"}, {field: ["not", "a", "table"]})


@given(major=st.integers(2, 4), minor=st.integers(0, 20), micro=st.integers(0, 20))
def test_python_prefix_and_range(major: int, minor: int, micro: int) -> None:
    caps = {"python": f"{major}.{minor}.{micro}"}
    assert fits({"python": f"{major}.{minor}"}, caps)
    assert fits({"python": f"{major}"}, caps)
    assert not fits({"python": f"{major}.{minor + 1}"}, caps)
    assert fits({"python": f">={major}.{minor}"}, caps)
    assert not fits({"python": f">={major}.{minor + 1}"}, caps)
    assert fits({"python": f">={major}.0,<{major + 1}"}, caps)
    assert not fits({"python": f"{major}.{minor}"}, {})
    # 3.1 is not a prefix of 3.11
    assert not fits({"python": "3.1"}, {"python": "3.11.2"})


@pytest.mark.parametrize("programs", [[["gcc"]], [{"name": "gcc"}], [None, 3], "gcc", 7, None])
def test_malformed_program_lists_count_as_no_programs(programs: object) -> None:
    # a worker's capabilities are whatever it sent: a bad list must not crash matching
    caps = {"programs": programs, "programs_missing": programs}
    assert not fits({"programs": "gcc"}, caps)
    assert fits({"programs": "gcc"}, {"programs": [["gcc"], "gcc"]})


def test_unknown_key_reached_unmet_is_a_reason_not_a_crash() -> None:
    # submit refuses unknown keys, but a row from an older coordinator may carry one
    assert unmet({"colour": "red"}, {"colour": "red"}) == ["unknown requirement colour"]
