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
