"""What a forked task takes from its parent (coordinator/inherit.py)."""

from __future__ import annotations

from corral.coordinator.inherit import inherit_requires
from corral.protocol import TaskSpec


def test_children_take_the_network_unless_they_name_it() -> None:
    plain = TaskSpec(argv=["a"], requires={"min_cpus": "2"})
    own = TaskSpec(argv=["b"], requires={"network": "no"})
    got = inherit_requires([plain, own], {"network": "yes", "os": "linux"})
    assert got[0].requires == {"min_cpus": "2", "network": "yes"}
    assert got[1].requires == {"network": "no"}
    assert plain.requires == {"min_cpus": "2"}  # the submitted spec is left alone


def test_nothing_to_inherit_from_a_parent_without_network() -> None:
    specs = [TaskSpec(argv=["a"])]
    assert inherit_requires(specs, {"os": "linux"}) is specs
