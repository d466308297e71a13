"""The `libcloud` provider through a real coordinator, with libcloud's Dummy driver.

The Dummy driver keeps its nodes in the coordinator's memory and boots nothing, so no worker
ever joins: what this shows is the provider's calls through the autoscaler (a node created
per launch, its id the handle, the launch given up at join_timeout and its node destroyed
without error). The user-data itself is checked in tests/coordinator/test_providers_remote.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from corral.protocol import TaskSpec

from .conftest import Farm, wait_for


@pytest.mark.timeout(60)
def test_dummy_cloud_launches_are_given_up_at_join_timeout_and_their_nodes_destroyed(
    farm: Callable[..., Farm],
) -> None:
    scale = "libcloud:driver=dummy,image=1,size=1,max=2,max_launches=2,join_timeout=2,startup=1"
    f = farm(server_args=("--scale", scale))
    with f.client() as client:
        client.submit_job([TaskSpec(argv=["true"]) for _ in range(4)], name="cloud")

        def two_failed() -> bool:
            failed = [x for x in client.scale().launches if x.state == "failed"]
            return len(failed) >= 2

        wait_for(two_failed, 30.0, 0.2, "two launches to be given up")
        status = client.scale()
    failed = [x for x in status.launches if x.state == "failed"]
    # the Dummy driver numbers its nodes after the two it starts with
    assert all(x.handle is not None and int(x.handle) > 2 for x in failed)
    assert all("did not join" in str(x.error) for x in failed)
    assert not any("cleaning up" in str(x.error) for x in status.launches)  # destroyed fine
    assert status.providers[0].name == "libcloud" and status.providers[0].failed >= 2
