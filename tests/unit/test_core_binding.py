"""core/binding.py: when a pod is a task's binding, the status it stands for, and what the
task's first status write then carries."""
from __future__ import annotations

import pytest

from podbatch.core import binding

pytestmark = pytest.mark.unit

NODE = {"poolId": "p", "nodeId": "p-0", "nodeName": "n0", "affinityId": "p-0", "taskRootDirectory": "/d/workitems/j/job-1/t"}


@pytest.mark.parametrize("status, attempt", [
    (None, 1),                                                            # a new task, no status yet
    ({"state": "active", "attempt": 3}, 3),                               # queued again after retries
    ({"state": "active", "attempt": 2, "stoppingPods": ["t-1"]}, None),  # its old pods still stop: no binding yet
    ({"state": "preparing", "attempt": 1, "podName": "t-1"}, None),      # the status records it
    ({"state": "running", "attempt": 1, "podName": "t-1"}, None),
    ({"state": "completed", "attempt": 1}, None),
    ({"state": "active", "attempt": 1, "podName": "t-1"}, None),         # (never written so; not ours to guess)
])
def test_which_attempt_a_pod_may_bind(status, attempt):
    assert binding.awaits_pod(status) == attempt


def test_the_annotation_round_trips_and_junk_is_ignored():
    b = binding.parse(binding.annotation(NODE, "2026-12-01T00:00:00Z"))
    assert b == {"nodeInfo": NODE, "boundAt": "2026-12-01T00:00:00Z"}
    for junk in (None, "", "{", "[]", '{"nodeInfo": {}}', '{"nodeInfo": "x"}'):
        assert binding.parse(junk) is None


def test_a_new_task_bound_by_its_pod():
    st, fields = binding.bound_status(None, "t-1", {"nodeInfo": NODE, "boundAt": "T0"})
    assert st["state"] == "preparing" and st["previousState"] == "active" and st["attempt"] == 1
    assert st["podName"] == "t-1" and st["nodeInfo"] == NODE and st["stateTransitionTime"] == "T0"
    assert st["executionInfo"] == {"retryCount": 0, "requeueCount": 0}
    assert fields["podName"] == "t-1" and fields["nodeInfo"] == NODE and fields["attempt"] == 1


def test_a_requeued_task_keeps_its_counts():
    prior = {"state": "active", "attempt": 3, "executionInfo": {"retryCount": 1, "requeueCount": 1},
             "pendingReason": {"reason": "Requeued"}}
    st, fields = binding.bound_status(prior, "t-3", {"nodeInfo": NODE, "boundAt": "T1"})
    assert st["executionInfo"] == {"retryCount": 1, "requeueCount": 1} and st["pendingReason"] is None
    assert fields == {"attempt": 3, "podName": "t-3", "nodeInfo": NODE, "pendingReason": None}


@pytest.mark.parametrize("patch, want", [
    # a completion writes the binding with it
    ({"state": "completed", "executionInfo": {"result": "success"}},
     {"state": "completed", "attempt": 1, "podName": "t-1", "nodeInfo": NODE, "pendingReason": None,
      "executionInfo": {"retryCount": 0, "requeueCount": 0, "result": "success"}}),
    # a requeue's own fields win: the next attempt, no pod, no node
    ({"state": "active", "attempt": 2, "podName": None, "nodeInfo": None, "pendingReason": {"reason": "Requeued"}},
     {"state": "active", "attempt": 2, "podName": None, "nodeInfo": None, "pendingReason": {"reason": "Requeued"},
      "stateTransitionTime": "T0", "executionInfo": {"retryCount": 0, "requeueCount": 0}}),
])
def test_the_first_write_carries_the_binding(patch, want):
    _, fields = binding.bound_status(None, "t-1", {"nodeInfo": NODE, "boundAt": "T0"})
    got = binding.with_binding(patch, fields)
    for k, v in want.items():
        assert got[k] == v, (k, got)
    assert binding.with_binding(patch, None) is patch
