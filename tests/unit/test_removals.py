"""Node removals lower a pool's effective target once each, and only for the spec's generation."""
import pytest

from podbatch.core import removals


def test_a_removal_lowers_the_effective_target_of_its_generation():
    a = removals.record(None, generation=3, dedicated=True, request_id="r1")
    assert removals.effective_targets(dedicated=5, low_priority=2, annotation=a, generation=3) == (4, 2)
    b = removals.record(a, generation=3, dedicated=False, request_id="r2")
    assert removals.effective_targets(dedicated=5, low_priority=2, annotation=b, generation=3) == (4, 1)


def test_the_same_request_counts_once():
    a = removals.record(None, generation=1, dedicated=True, request_id="r1")
    assert removals.record(a, generation=1, dedicated=True, request_id="r1") is None
    assert removals.already_recorded(a, "r1") and not removals.already_recorded(a, "r2")


def test_a_new_spec_generation_resets_the_removals():
    a = removals.record(None, generation=1, dedicated=True, request_id="r1")
    assert removals.effective_targets(dedicated=5, low_priority=0, annotation=a, generation=2) == (5, 0)
    b = removals.record(a, generation=2, dedicated=True, request_id="r2")
    assert removals.parse(b) == (2, [("d", "r2")])


@pytest.mark.parametrize("value", [None, "", "x", "abc:d:r1", "3"])
def test_malformed_annotations_count_as_none(value):
    assert removals.effective_targets(dedicated=2, low_priority=1, annotation=value, generation=3) == (2, 1)


def test_never_below_zero():
    a = removals.record(None, generation=1, dedicated=True, request_id="r1")
    a = removals.record(a, generation=1, dedicated=True, request_id="r2")
    assert removals.effective_targets(dedicated=1, low_priority=0, annotation=a, generation=1) == (0, 0)
