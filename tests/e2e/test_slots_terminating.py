"""A node's slots are held by every live task pod on it, whatever its Task: when a job is
deleted, its Task objects go at once (garbage collector) while their pods may still take
their grace period to terminate. The next job's tasks must not be bound to those slots
until the pods have ended or gone.

The node simulator confirms a deletion at once (docs/nodesim.md), so the test plays a
long grace period with a finalizer of its own on the deleted job's pod: the pod stays, with
a deletionTimestamp and phase Running, on its node until the test lets it go."""
from __future__ import annotations

import subprocess
import time

import pytest
from kubernetes.client.rest import ApiException

from kit import job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e
HOLD = "podbatch.io/test-hold"   # keeps the pod in the API after its deletion: a grace period that never ends


def _pods(core_v1, ns: str, job_name: str) -> list:
    return core_v1.list_namespaced_pod(ns, label_selector=f"podbatch.io/job={job_name}").items


def _release(core_v1, ns: str, name: str) -> None:
    try:
        core_v1.patch_namespaced_pod(name, ns, {"metadata": {"finalizers": None}})
    except ApiException as e:
        if e.status != 404:
            raise


@pytest.mark.parametrize("deleted", [("bjob", "a"), ("btask", "a0")], ids=["job-deleted", "task-deleted"])
def test_a_deleted_tasks_terminating_pod_keeps_its_slot(operator, objects, core_v1, namespace, kubeconfig, deleted):
    objects.create(kwok_pool("p", 1, slots=1))
    wait_for("an idle node", lambda: [c for c in objects.list("ComputeNode")
                                      if (c.get("status") or {}).get("state") == "idle"], 120)
    objects.create(job("a", "p"))
    objects.create(task("a0", "a", annotations=sim(600)))
    pod_a = wait_for("a0's pod running", lambda: next((p for p in _pods(core_v1, namespace, "a")
                                                       if p.status.phase == "Running"), None), 60)
    name_a, node = pod_a.metadata.name, pod_a.spec.node_name
    core_v1.patch_namespaced_pod(name_a, namespace, {"metadata": {"finalizers": [HOLD]}})
    try:
        r = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "-n", namespace, "delete", *deleted, "--wait=false"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        wait_for("a0's Task gone", lambda: not [t for t in objects.list("Task") if t["spec"]["jobName"] == "a"], 30)
        terminating = wait_for("a0's pod terminating", lambda: next(
            (p for p in _pods(core_v1, namespace, "a") if p.metadata.deletion_timestamp), None), 30)
        assert terminating.status.phase == "Running" and terminating.spec.node_name == node

        objects.create(job("b", "p", onAllTasksComplete="terminatejob"))
        objects.create(task("b0", "b", annotations=sim(1)))
        # b0 waits (and says why) while a0's pod still holds the node's only slot
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            bound = [(p.metadata.name, p.spec.node_name, p.status.phase) for p in _pods(core_v1, namespace, "b")]
            assert not bound, (f"b0 was bound to node {node} while the pod {name_a} of the deleted {deleted[0]} {deleted[1]} still terminated "
                               f"there (pods of b: {bound}; b0: {objects.status('Task', 'b0')})")
            time.sleep(0.5)
        assert _pods(core_v1, namespace, "a"), f"{name_a} went before the test let it go"
        st = objects.status("Task", "b0")
        assert (st.get("state") or "active") == "active" and st.get("pendingReason"), st
    finally:
        _release(core_v1, namespace, name_a)

    # the pod gone, its slot is free: b0 runs there
    wait_for("a0's pod gone", lambda: not _pods(core_v1, namespace, "a"), 30)
    done = objects.wait_job_done("b", 60)
    assert done["taskCounts"]["succeeded"] == 1, done
    assert objects.status("Task", "b0")["nodeInfo"]["nodeName"] == node
