"""Autoscale formulas on a live pool: evaluated by podbatch, shown in autoScaleRun."""
from __future__ import annotations

import pytest

from kit import wait_for

pytestmark = pytest.mark.e2e


def _members(objects, pool: str) -> int:
    return (objects.status("Pool", pool).get("currentDedicatedNodes")) or 0


def test_formula_sets_the_target_and_a_bad_formula_keeps_the_size(operator, objects):
    objects.create({"kind": "Pool", "metadata": {"name": "auto"}, "spec": {
        "nodeGroup": {"provider": "kwok"}, "enableAutoScale": True, "autoScaleEvaluationInterval": "PT5M",
        "autoScaleFormula": "nodes = 1 + 1; $TargetDedicatedNodes = nodes; $NodeDeallocationOption = taskcompletion;"}})
    wait_for("2 nodes", lambda: _members(objects, "auto") == 2)
    run = objects.status("Pool", "auto")["autoScaleRun"]
    assert "$TargetDedicatedNodes=2" in run["results"] and not run.get("error")

    objects.patch("Pool", "auto", {"spec": {"autoScaleFormula": "$TargetDedicatedNodes = min(3, $CurrentDedicatedNodes + 1);"}})
    wait_for("3 nodes", lambda: _members(objects, "auto") == 3)

    objects.patch("Pool", "auto", {"spec": {"autoScaleFormula": "$TargetDedicatedNodes = avrg(1, 2);"}})
    err = wait_for("autoscale error", lambda: (objects.status("Pool", "auto").get("autoScaleRun") or {}).get("error"))
    assert "avrg" in err["message"] and "autoScaleFormula" in err["message"]
    conds = {c["type"]: c for c in objects.status("Pool", "auto")["conditions"]}
    assert conds["AutoScaleError"]["status"] == "True"
    assert _members(objects, "auto") == 3


def test_task_metrics_count_as_batch_does_and_in_slots(operator, objects):
    """$ActiveTasks: ready tasks only (dependencies met), gang instances counted, a task that can
    never fit left out; $ActiveTaskSlots: the same in slots."""
    from kit import job, task
    objects.create(job("demand", "dem", usesTaskDependencies=True))
    objects.create(task("first", "demand", requiredSlots=2))                                  # 1 task, 2 slots
    objects.create(task("after", "demand", dependsOn={"taskIds": ["first"]}))                 # blocked: not demand
    objects.create(task("gang", "demand", multiInstanceSettings={"numberOfInstances": 3}))    # 3 instances, 3 slots
    objects.create(task("toobig", "demand", requiredSlots=9))                                 # never fits 4 slots
    wait_for("the operator to see the tasks", lambda: all(
        (objects.status("Task", n).get("pendingReason") or {}).get("reason") == "PoolNotFound" for n in ("first", "gang")))
    objects.create({"kind": "Pool", "metadata": {"name": "dem"}, "spec": {
        "nodeGroup": {"provider": "kwok"}, "enableAutoScale": True, "autoScaleEvaluationInterval": "PT5M",
        "taskSlotsPerNode": 4, "enableInterNodeCommunication": True,
        "autoScaleFormula": "a = max($ActiveTasks.GetSample(1)); s = max($ActiveTaskSlots.GetSample(1)); "
                            "p = max($PendingTaskSlots.GetSample(1)); $TargetDedicatedNodes = 0;"}})
    run = wait_for("the formula evaluated", lambda: (objects.status("Pool", "dem").get("autoScaleRun") or {}).get("results"))
    assert "$a=4" in run and "$s=5" in run and "$p=5" in run, run
