"""The pure checkpoint decisions (coordinator/checkpoints.py): no store, no sockets."""

from __future__ import annotations

from corral.coordinator.checkpoints import Saved, blame, kept, restore_from


def test_the_newest_good_checkpoint_is_restored() -> None:
    assert restore_from([]) is None
    assert restore_from([Saved(3), Saved(4)]) == 4
    assert restore_from([Saved(3), Saved(4, bad=True)]) == 3
    assert restore_from([Saved(3, bad=True), Saved(4, bad=True)]) is None  # from scratch


def test_a_failure_straight_after_restoring_discredits_that_checkpoint() -> None:
    saved = [Saved(3), Saved(4)]
    assert blame(4, saved, succeeded=False) == 4
    assert blame(4, saved, succeeded=True) is None
    assert blame(None, saved, succeeded=False) is None  # started from scratch
    # it saved a newer one before failing: its start was good
    assert blame(3, saved, succeeded=False) is None
    assert blame(4, [Saved(3), Saved(4, bad=True)], succeeded=False) is None  # already
    assert blame(2, saved, succeeded=False) is None  # gone meanwhile


def test_a_corrupt_checkpoint_is_tried_once_then_the_one_before_then_scratch() -> None:
    saved = [Saved(1), Saved(2)]
    starts = []
    for _ in range(4):  # every attempt fails at once, saving nothing
        start = restore_from(saved)
        starts.append(start)
        bad = blame(start, saved, succeeded=False)
        saved = [Saved(s.n, s.bad or s.n == bad) for s in saved]
    assert starts == [2, 1, None, None]


def test_the_newest_two_good_ones_are_kept() -> None:
    assert kept([]) == set()
    assert kept([Saved(1), Saved(2), Saved(3)]) == {2, 3}
    assert kept([Saved(1), Saved(2, bad=True), Saved(3)]) == {1, 3}
    assert kept([Saved(1, bad=True), Saved(2, bad=True), Saved(3)]) == {3}
    assert kept([Saved(1), Saved(2, bad=True)]) == {1, 2}  # no newer save yet: still shown
    assert kept([Saved(1, bad=True)]) == {1}
    assert kept([Saved(1), Saved(2), Saved(3)], keep=1) == {3}
