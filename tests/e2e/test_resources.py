"""Resource-aware placement (issue 12): a task's CPU, memory and extended resources must fit
what its node has left besides a slot; a kubelet that turns a pod away requeues it."""
from __future__ import annotations

import os
import time

import pytest

from kit import job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e
REAL_NODE = os.environ.get("PODBATCH_REAL_NODE", "localhost")


def _cpu(n: str) -> dict:
    return {"requests": {"cpu": n}}


def test_cpu_bounds_a_node_before_its_slots_and_waiting_tasks_say_why(operator, objects):
    # one node with 2 CPUs and 4 slots; tasks of 1 CPU: never more than 2 at once
    objects.create(kwok_pool("cpu", 1, slots=4, nodeGroup={"provider": "kwok", "kwok": {"capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"}}}))
    objects.create(job("j", "cpu", onAllTasksComplete="terminatejob"))
    for i in range(5):
        objects.create(task(f"t{i}", "j", annotations=sim(4), resources=_cpu("1")))
    objects.create(job("big", "cpu"))
    objects.create(task("huge", "big", resources=_cpu("3")))

    most, waiting_reason = 0, None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states = [objects.status("Task", f"t{i}") for i in range(5)]
        most = max(most, sum(1 for st in states if st.get("state") in ("preparing", "running")))
        for st in states:
            if st.get("state") == "active" and (st.get("pendingReason") or {}).get("reason"):
                waiting_reason = st["pendingReason"]
        if all(st.get("state") == "completed" for st in states):
            break
        time.sleep(0.3)
    assert most == 2, f"at most 2 tasks of 1 CPU fit a 2-CPU node at once, saw {most}"
    assert waiting_reason and waiting_reason["reason"] == "WaitingForResources", waiting_reason
    assert "cpu 1" in waiting_reason["message"], waiting_reason
    assert objects.wait_job_done("j", 60)["taskCounts"]["succeeded"] == 5

    huge = wait_for("the 3-CPU task refused", lambda: (lambda p: p if p.get("reason") == "ResourcesExceedNode" else None)(
        objects.status("Task", "huge").get("pendingReason") or {}), 60)
    assert "largest: cpu 2" in huge["message"] and "spec.resources" in huge["message"], huge


def test_a_pod_the_kubelet_turns_away_is_requeued_not_retried(real_pool, objects, core_v1, namespace):
    # a pod podbatch does not account for takes most of the real node's CPU
    alloc = core_v1.read_node(REAL_NODE).status.allocatable["cpu"]
    millis = int(float(alloc[:-1]) if alloc.endswith("m") else float(alloc) * 1000)
    blocker = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cpu-blocker"},
               "spec": {"nodeName": REAL_NODE, "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": "pause", "image": "k8s.gcr.io/pause:3.2", "imagePullPolicy": "Never",
                                        "resources": {"requests": {"cpu": f"{millis - 300}m"}}}]}}
    core_v1.create_namespaced_pod(namespace, blocker)
    try:
        wait_for("the blocker running", lambda: core_v1.read_namespaced_pod("cpu-blocker", namespace).status.phase
                 == "Running", 60)
        objects.create(job("rj", real_pool, onAllTasksComplete="terminatejob"))
        objects.create(task("wants-cpu", "rj", "/bin/true", resources=_cpu("1")))
        st = wait_for("the task requeued after the kubelet's rejection", lambda: (lambda s: s if (
            s.get("executionInfo") or {}).get("requeueCount", 0) >= 1 else None)(objects.status("Task", "wants-cpu")), 90)
        info = st["executionInfo"]
        assert info.get("retryCount", 0) == 0, info
        why = wait_for("the requeue's Event", lambda: [e.message for e in core_v1.list_namespaced_event(namespace).items
                                                       if e.involved_object.name == "wants-cpu" and e.reason == "TaskRequeued"], 30)
        assert any("OutOfcpu" in m for m in why), why
        # the node counts as out of CPU for a while: no hot loop of rejected pods
        time.sleep(5)
        assert objects.status("Task", "wants-cpu")["executionInfo"]["requeueCount"] <= 2
    finally:
        core_v1.delete_namespaced_pod("cpu-blocker", namespace, grace_period_seconds=0)
    done = objects.wait_state("Task", "wants-cpu", "completed", 120)
    assert done["executionInfo"]["result"] == "success" and done["executionInfo"]["retryCount"] == 0
