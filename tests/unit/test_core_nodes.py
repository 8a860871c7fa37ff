"""Table tests of the compute node state machine (core/nodes.py): what Kubernetes shows of a
node in, the Batch node state a user reads in `status.state` out; which states take tasks,
when a node's tasks may start elsewhere, and which nodes a shrinking pool gives back."""
from __future__ import annotations

import dataclasses

import pytest

from podbatch.core.nodes import NodeFacts, is_schedulable, node_lost, node_state, nodes_to_release, taint_to_restore

# A node that booted, ran its start task (waitForSuccess) and takes tasks.
HEALTHY = NodeFacts(exists=True, ready="True", ever_ready=True, prep_phase="Succeeded",
                    prep_failed_for_good=False, wait_for_success=True, scheduling_enabled=True,
                    running_tasks=0)
NEW = dataclasses.replace(HEALTHY, ever_ready=False, prep_phase="")


def facts(base: NodeFacts = HEALTHY, **changes) -> NodeFacts:
    return dataclasses.replace(base, **changes)


STATES = [
    # -- before the node takes tasks ---------------------------------------------------
    pytest.param(facts(NEW, exists=False, ready=""), "creating", id="no-kubernetes-node-yet"),
    pytest.param(facts(NEW, ready=""), "creating", id="node-never-reported-ready"),
    pytest.param(facts(NEW, ready="False", not_ready_seconds=3600), "creating",
                 id="never-ready-is-creating-not-unusable"),
    pytest.param(facts(NEW), "starting", id="ready-no-preparation-pod-yet"),
    pytest.param(facts(NEW, wait_for_success=False), "starting", id="ready-no-preparation-pod-yet-no-wait"),
    pytest.param(facts(NEW, prep_phase="Pending"), "starting", id="start-task-pending-wait"),
    pytest.param(facts(NEW, prep_phase="Pending", wait_for_success=False), "idle",
                 id="start-task-pending-no-wait-takes-tasks"),
    pytest.param(facts(NEW, prep_phase="Running"), "waitingforstarttask", id="start-task-running-wait"),
    pytest.param(facts(NEW, prep_phase="Failed"), "waitingforstarttask",
                 id="start-task-failed-retries-left-wait"),
    pytest.param(facts(NEW, prep_phase="Running", wait_for_success=False), "idle",
                 id="start-task-running-no-wait-takes-tasks"),
    pytest.param(facts(NEW, prep_phase="Failed", prep_failed_for_good=True), "starttaskfailed",
                 id="start-task-failed-for-good-wait"),
    pytest.param(facts(NEW, prep_phase="Failed", prep_failed_for_good=True, wait_for_success=False), "idle",
                 id="start-task-failed-for-good-no-wait-still-usable"),
    pytest.param(facts(NEW, prep_phase="Failed", prep_failed_for_good=True, wait_for_success=False,
                       running_tasks=1), "running", id="start-task-failed-no-wait-running-tasks"),
    # -- taking tasks ------------------------------------------------------------------
    pytest.param(HEALTHY, "idle", id="idle"),
    pytest.param(facts(running_tasks=2), "running", id="running"),
    pytest.param(facts(scheduling_enabled=False), "offline", id="scheduling-disabled-no-tasks-offline"),
    pytest.param(facts(scheduling_enabled=False, running_tasks=1), "running",
                 id="scheduling-disabled-tasks-still-running"),
    # -- node operations ---------------------------------------------------------------
    pytest.param(facts(rebooting="rebooting", running_tasks=1), "rebooting", id="rebooting"),
    pytest.param(facts(rebooting="reimaging", running_tasks=1), "reimaging", id="reimaging"),
    pytest.param(facts(leaving=True), "leavingpool", id="leaving-pool"),
    pytest.param(facts(leaving=True, running_tasks=3), "leavingpool", id="leaving-pool-with-tasks"),
    pytest.param(facts(leaving=True, exists=False), "leavingpool", id="leaving-pool-node-already-gone"),
    pytest.param(facts(leaving=True, ready="False", not_ready_seconds=900), "leavingpool",
                 id="leaving-pool-wins-over-unusable"),
    # -- out of touch: unknown for the grace, then unusable --------------------------------
    pytest.param(facts(ready="False"), "unknown", id="not-ready-just-now"),
    pytest.param(facts(ready="Unknown", not_ready_seconds=120), "unknown", id="kubelet-silent-within-grace"),
    pytest.param(facts(ready="False", not_ready_seconds=299.9), "unknown", id="not-ready-just-under-grace"),
    pytest.param(facts(ready="False", not_ready_seconds=300), "unusable", id="not-ready-at-grace"),
    pytest.param(facts(ready="Unknown", not_ready_seconds=4000), "unusable", id="kubelet-silent-past-grace"),
    pytest.param(facts(ready="False", not_ready_seconds=31, lost_grace=30), "unusable",
                 id="not-ready-past-a-configured-grace"),
    pytest.param(facts(ready="False", not_ready_seconds=10, running_tasks=3), "unknown",
                 id="not-ready-with-tasks-keeps-them-unknown"),
    pytest.param(facts(ready="False", not_ready_seconds=10, rebooting="rebooting", running_tasks=1), "unknown",
                 id="not-ready-shows-over-a-reboot"),
    pytest.param(facts(ready="False", not_ready_seconds=10, scheduling_enabled=False), "unknown",
                 id="not-ready-shows-over-offline"),
]


@pytest.mark.parametrize("f, expected", STATES)
def test_node_state(f, expected):
    assert node_state(f) == expected


@pytest.mark.parametrize("state, enabled, expected", [
    pytest.param("idle", True, True, id="idle"),
    pytest.param("running", True, True, id="running"),
    pytest.param("idle", False, False, id="idle-scheduling-disabled"),
    pytest.param("running", False, False, id="running-scheduling-disabled"),
    *[pytest.param(s, True, False, id=s) for s in (
        "creating", "starting", "waitingforstarttask", "starttaskfailed", "offline", "rebooting",
        "reimaging", "leavingpool", "unknown", "unusable", "preempted")],
])
def test_is_schedulable(state, enabled, expected):
    assert is_schedulable(state, enabled) is expected


def test_only_states_node_state_calls_usable_take_tasks():
    # Every row above: a node takes tasks exactly when it is idle or running (and enabled).
    for param in STATES:
        f, expected = param.values
        assert is_schedulable(node_state(f), f.scheduling_enabled) is (
            expected in ("idle", "running") and f.scheduling_enabled), param.id


@pytest.mark.parametrize("state, exists, expected", [
    pytest.param("unusable", True, True, id="unusable-past-grace-is-fenced"),
    pytest.param("unknown", True, False, id="unknown-within-grace-its-pods-may-run"),
    pytest.param("running", False, True, id="compute-node-gone"),
    pytest.param(None, False, True, id="never-seen-and-gone"),
    pytest.param(None, True, False, id="no-state-yet"),
    *[pytest.param(s, True, False, id=s) for s in (
        "idle", "running", "offline", "rebooting", "reimaging", "leavingpool", "starttaskfailed")],
])
def test_node_lost(state, exists, expected):
    assert node_lost(state, exists) is expected


@pytest.mark.parametrize("seconds, lost", [
    pytest.param(0, False, id="at-once"), pytest.param(299, False, id="within-grace"),
    pytest.param(300, True, id="at-grace"), pytest.param(3600, True, id="long-after"),
])
def test_a_not_ready_node_loses_its_tasks_only_after_the_grace(seconds, lost):
    state = node_state(facts(ready="False", not_ready_seconds=seconds, running_tasks=2))
    assert node_lost(state, exists=True) is lost


@pytest.mark.parametrize("loads, count, expected", [
    pytest.param({"a": 2, "b": 0, "c": 1}, 1, ["b"], id="idle-first"),
    pytest.param({"a": 2, "b": 0, "c": 1}, 2, ["b", "c"], id="then-least-busy"),
    pytest.param({"n3": 0, "n1": 0, "n2": 0}, 2, ["n1", "n2"], id="ties-by-name"),
    pytest.param({"n2": 1, "n1": 1, "n0": 5}, 1, ["n1"], id="busy-ties-by-name"),
    pytest.param({"z": 0, "a": 4, "m": 0}, 3, ["a", "m", "z"], id="result-in-name-order"),
    pytest.param({"a": 0, "b": 0}, 0, [], id="count-zero"),
    pytest.param({"a": 0, "b": 0}, -1, [], id="count-negative"),
    pytest.param({"b": 3, "a": 1}, 5, ["a", "b"], id="count-above-nodes-takes-all"),
    pytest.param({}, 2, [], id="no-nodes"),
])
def test_nodes_to_release(loads, count, expected):
    assert nodes_to_release(loads, count) == expected


OURS = {"key": "podbatch.io/pool", "value": "ns.p", "effect": "NoSchedule"}
KWOK = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}


def knode(label: str | None = "ns.p", taints=(), deleting: bool = False) -> dict:
    meta: dict = {"name": "n1", "labels": {"podbatch.io/pool": label} if label else {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    return {"metadata": meta, "spec": {"taints": list(taints)}}


@pytest.mark.parametrize("node, expected", [
    (None, None),                                                  # no Node
    (knode(taints=[KWOK, OURS]), None),                            # tainted: nothing to do
    (knode(taints=[{**OURS, "timeAdded": None}]), None),           # extra fields the server adds
    (knode(taints=[KWOK]), [KWOK, OURS]),                          # lost it: put back, the rest kept
    (knode(taints=[]), [OURS]),
    (knode(taints=[KWOK, {**OURS, "value": "ns.other"}]), [KWOK, OURS]),   # another pool's value
    (knode(taints=[KWOK, {**OURS, "effect": "NoExecute"}]), [KWOK, OURS]),
    (knode(label=None, taints=[KWOK]), None),                      # not (or no longer) the pool's
    (knode(label="ns.other", taints=[KWOK]), None),
    (knode(taints=[KWOK], deleting=True), None),                   # going: left alone
])
def test_a_pool_node_that_lost_its_taint_gets_it_back(node, expected):
    assert taint_to_restore(node, "ns.p") == expected
