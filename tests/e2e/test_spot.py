"""Low-priority (spot) nodes (issue 12): a node its cloud takes back is `preempted`, its
tasks are requeued (not retried) and the pool replaces it."""
from __future__ import annotations

import pytest

from kit import job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e


def test_a_spot_node_taken_away_requeues_its_task_and_is_replaced(operator, objects, core_v1):
    objects.create(kwok_pool("spot", 0, slots=1, targetLowPriorityNodes=1))
    cnode = wait_for("an idle low-priority node", lambda: next(
        (c for c in objects.list("ComputeNode") if c["spec"]["poolName"] == "spot"
         and (c.get("status") or {}).get("state") == "idle"), None), 120)
    assert cnode["spec"]["isDedicated"] is False and cnode["status"]["isDedicated"] is False
    pool = objects.status("Pool", "spot")
    assert pool["currentLowPriorityNodes"] == 1 and pool["currentDedicatedNodes"] == 0

    objects.create(job("sj", "spot", onAllTasksComplete="terminatejob"))
    objects.create(task("long", "sj", annotations=sim(8)))
    st = objects.wait_state("Task", "long", "running", 60)
    node = st["nodeInfo"]["nodeName"]

    # the cloud takes the node back: first its termination taint, then the Node goes
    taints = core_v1.read_node(node).spec.taints or []
    core_v1.patch_node(node, {"spec": {"taints": [t.to_dict() for t in taints]
                                       + [{"key": "podbatch.io/preempted", "value": "spot", "effect": "NoSchedule"}]}})
    wait_for("the compute node preempted", lambda: any(
        c["spec"]["nodeName"] == node and (c.get("status") or {}).get("state") == "preempted"
        for c in objects.list("ComputeNode")), 60)
    wait_for("the pool counting it", lambda: (objects.status("Pool", "spot").get("nodeCounts") or {}).get("preempted") == 1, 30)
    requeued = wait_for("the task requeued", lambda: (lambda s: s if (s.get("executionInfo") or {}).get("requeueCount") == 1
                                                      else None)(objects.status("Task", "long")), 60)
    assert requeued["executionInfo"].get("retryCount", 0) == 0
    core_v1.delete_node(node)

    done = objects.wait_state("Task", "long", "completed", 120)
    info = done["executionInfo"]
    assert info["result"] == "success" and info["requeueCount"] == 1 and info.get("retryCount", 0) == 0, info
    wait_for("the pool back at one low-priority node", lambda: (lambda p: p.get("currentLowPriorityNodes") == 1
                                                                and (p.get("nodeCounts") or {}).get("preempted", 0) == 0)(
        objects.status("Pool", "spot")), 120)
