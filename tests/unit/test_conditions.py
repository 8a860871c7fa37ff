"""kstatus conditions (core/conditions.py): transition times move only when a status changes,
and per kind exactly one of Ready / Reconciling / Stalled holds, with the reason a user needs."""
from __future__ import annotations

import pytest

from podbatch.core import conditions as cc

pytestmark = pytest.mark.unit

T0, T1 = "2024-05-01T10:00:00Z", "2024-05-01T10:05:00Z"


def by_type(conds):
    return {c["type"]: c for c in conds}


def kst(conds):
    """The one True condition among Ready / Reconciling / Stalled, with its reason."""
    d = {c.type if isinstance(c, cc.Cond) else c["type"]: c for c in conds}
    true = [t for t in cc.KSTATUS if (d[t].status if isinstance(d[t], cc.Cond) else d[t]["status"]) in (True, "True")]
    assert len(true) == 1, conds
    c = d[true[0]]
    return true[0], c.reason if isinstance(c, cc.Cond) else c["reason"]


@pytest.mark.parametrize("old_status,new_status,reason,want_time", [
    ("True", True, "Same", T0),            # unchanged status: the old time stays
    ("True", True, "OtherReason", T0),     # reason or message changes do not move it
    ("True", False, "Broke", T1),          # a status change stamps now
    ("False", True, "Fixed", T1),
    (None, True, "New", T1),               # a new condition stamps now
])
def test_merge_keeps_transition_time_unless_the_status_changes(old_status, new_status, reason, want_time):
    old = [] if old_status is None else [{"type": "Ready", "status": old_status, "reason": "Same", "message": "m",
                                          "lastTransitionTime": T0, "observedGeneration": 1}]
    out = cc.merge(old, [cc.Cond("Ready", new_status, reason, "m")], now=T1, generation=2)
    assert out == [{"type": "Ready", "status": "True" if new_status else "False", "reason": reason, "message": "m",
                    "lastTransitionTime": want_time, "observedGeneration": 2}]


def test_merge_drops_unnamed_conditions_but_keeps_the_ones_asked():
    old = [{"type": "Retained", "status": "False", "reason": "RetentionTimeExpired", "lastTransitionTime": T0},
           {"type": "ResizeError", "status": "True", "reason": "X", "lastTransitionTime": T0}]
    out = cc.merge(old, [cc.Cond("Ready", True, "R", "")], now=T1, generation=None, keep=("Retained",))
    assert [c["type"] for c in out] == ["Ready", "Retained"]
    assert "observedGeneration" not in out[0]


def test_same_notices_status_generation_and_time_but_a_repeat_merge_is_the_same():
    desired = [cc.Cond("Ready", True, "R", "m")]
    first = cc.merge([], desired, now=T0, generation=1)
    again = cc.merge(first, desired, now=T1, generation=1)
    assert cc.same(first, again)
    assert not cc.same(first, cc.merge(first, desired, now=T1, generation=2))
    assert not cc.same(first, cc.merge(first, [cc.Cond("Ready", False, "R", "m")], now=T1, generation=1))


STEADY = {"idle": 2, "running": 1, "total": 3}


@pytest.mark.parametrize("kw,want", [
    (dict(allocation_state="steady", target=3, current=3, node_counts=STEADY), ("Ready", "Steady")),
    (dict(allocation_state="steady", target=0, current=0, node_counts={}), ("Ready", "Steady")),
    (dict(allocation_state="steady", target=2, current=2, node_counts={"idle": 1, "offline": 1}), ("Ready", "Steady")),
    (dict(allocation_state="resizing", target=5, current=3, node_counts=STEADY), ("Reconciling", "Resizing")),
    (dict(allocation_state="steady", target=3, current=3, node_counts={"idle": 2, "starting": 1}), ("Reconciling", "NodesStarting")),
    (dict(allocation_state="steady", target=3, current=3, node_counts={"idle": 2, "rebooting": 1}), ("Reconciling", "NodesStarting")),
    (dict(allocation_state="steady", target=2, current=2, node_counts={"idle": 1, "startTaskFailed": 1}), ("Stalled", "StartTaskFailed")),
    (dict(allocation_state="steady", target=2, current=2, node_counts={"idle": 1, "unusable": 1}), ("Stalled", "NodeUnusable")),
    (dict(allocation_state="steady", target=2, current=0, node_counts={},
          resize_error={"code": "InsufficientNodes", "message": "no node matches"}), ("Stalled", "InsufficientNodes")),
    (dict(allocation_state="resizing", target=5, current=3, node_counts=STEADY,
          resize_error={"code": "AllocationTimedOut", "message": "t"}), ("Stalled", "AllocationTimedOut")),
    (dict(allocation_state="steady", target=3, current=3, node_counts=STEADY,
          autoscale_error={"code": "FormulaError", "message": "avrg"}), ("Stalled", "AutoScaleError")),
    (dict(allocation_state="stopping", target=0, current=3, node_counts=STEADY, deleting=True), ("Reconciling", "Deleting")),
    (dict(invalid="bad spec", allocation_state="", target=0, current=0, node_counts={}), ("Stalled", "InvalidSpec")),
])
def test_pool_conditions(kw, want):
    kw = {"invalid": None, "deleting": False, **kw}
    conds = cc.pool_conditions(**kw)
    assert kst(conds) == want
    types = {c.type: c for c in conds}
    assert types["Valid"].status is (kw["invalid"] is None)
    if kw.get("resize_error"):
        assert types["ResizeError"].status is True
    if kw.get("autoscale_error"):
        assert types["AutoScaleError"].status is True


@pytest.mark.parametrize("state,want", [
    ("idle", ("Ready", "Idle")), ("running", ("Ready", "Running")), ("offline", ("Ready", "Offline")),
    ("creating", ("Reconciling", "Creating")), ("starting", ("Reconciling", "Starting")),
    ("waitingforstarttask", ("Reconciling", "WaitingForStartTask")), ("rebooting", ("Reconciling", "Rebooting")),
    ("reimaging", ("Reconciling", "Reimaging")), ("leavingpool", ("Reconciling", "LeavingPool")),
    ("unknown", ("Reconciling", "Unknown")),
    ("starttaskfailed", ("Stalled", "StartTaskFailed")), ("unusable", ("Stalled", "NodeUnusable")),
])
def test_node_conditions(state, want):
    assert kst(cc.node_conditions(state=state)) == want


COUNTS = {"active": 1, "running": 2, "completed": 3, "succeeded": 3, "failed": 0}


@pytest.mark.parametrize("kw,want", [
    (dict(state="active"), ("Ready", "Active")),
    (dict(state="disabled"), ("Ready", "Disabled")),
    (dict(state="completed", terminate_reason="AllTasksComplete"), ("Ready", "Completed")),
    (dict(state="disabling"), ("Reconciling", "Disabling")),
    (dict(state="enabling"), ("Reconciling", "Enabling")),
    (dict(state="terminating", terminate_reason="UserTerminate"), ("Reconciling", "Terminating")),
    (dict(state="active", auto_pool_missing=True), ("Reconciling", "CreatingAutoPool")),
    (dict(state="active", scheduling_error={"code": "PoolNotFound", "message": "no pool p"}), ("Stalled", "PoolNotFound")),
    (dict(state="active", cycle=["a", "b", "a"]), ("Stalled", "DependencyCycle")),
    (dict(state="active", invalid="bad"), ("Stalled", "InvalidSpec")),
    # a pool deleted after the job completed does not make a finished job stalled
    (dict(state="completed", scheduling_error={"code": "PoolNotFound", "message": "gone"}), ("Ready", "Completed")),
])
def test_job_conditions(kw, want):
    kw = {"invalid": None, "scheduling_error": None, "cycle": None, "auto_pool_missing": False,
          "terminate_reason": None, "counts": COUNTS, **kw}
    conds = cc.job_conditions(**kw)
    assert kst(conds) == want
    types = {c.type: c for c in conds}
    assert types["Completed"].status is (kw["state"] == "completed")
    assert types["Completed"].message == "3 of 6 tasks completed"
    if kw["scheduling_error"]:
        assert types["Schedulable"].status is False
    if kw["cycle"]:
        assert types["DependencyCycle"].status is True


@pytest.mark.parametrize("kw,want", [
    (dict(state="active"), ("Ready", "Active")), (dict(state="disabled"), ("Ready", "Disabled")),
    (dict(state="completed"), ("Ready", "Completed")), (dict(state="terminating"), ("Reconciling", "Terminating")),
    (dict(state="active", invalid="bad schedule", invalid_reason="InvalidSchedule"), ("Stalled", "InvalidSchedule")),
])
def test_schedule_conditions(kw, want):
    assert kst(cc.schedule_conditions(**{"invalid": None, **kw})) == want


@pytest.mark.parametrize("status,kw,want", [
    ({"state": "preparing", "nodeInfo": {"nodeId": "p-0"}}, {}, ("Ready", "Preparing")),
    ({"state": "running"}, {}, ("Ready", "Running")),
    ({"state": "completed", "executionInfo": {"result": "success", "exitCode": 0}}, {}, ("Ready", "Succeeded")),
    ({"state": "completed", "executionInfo": {"result": "failure", "exitCode": 3,
                                              "failureInfo": {"code": "FailureExitCode", "message": "exit 3"}}}, {},
     ("Stalled", "FailureExitCode")),
    ({"state": "active"}, {}, ("Reconciling", "Queued")),
    ({"state": "active", "pendingReason": {"reason": "NoFreeSlots", "message": "m"}}, {}, ("Reconciling", "NoFreeSlots")),
    ({"state": "active", "pendingReason": {"reason": "PoolNotFound", "message": "m"}}, {"user_fixable": {"PoolNotFound"}},
     ("Stalled", "PoolNotFound")),
    ({"state": "active"}, {"invalid": "bad"}, ("Stalled", "InvalidSpec")),
])
def test_task_conditions(status, kw, want):
    assert kst(cc.task_conditions(status, **kw)) == want


def test_invalid_task_is_still_recognised_by_the_scheduler():
    # scheduling.py skips tasks with a False condition whose reason is InvalidSpec
    conds = cc.task_conditions({}, invalid="bad")
    assert any(c.reason == "InvalidSpec" and c.status is False for c in conds)
