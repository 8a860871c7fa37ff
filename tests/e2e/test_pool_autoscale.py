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


METRICS_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "nodes.metrics.k8s.io",
                 # a *.k8s.io group needs this to be served by a CRD: a stand-in for metrics-server's API
                 "annotations": {"api-approved.kubernetes.io": "unapproved, podbatch test double of metrics-server"}},
    "spec": {"group": "metrics.k8s.io", "scope": "Cluster",
             "names": {"plural": "nodes", "singular": "node", "kind": "NodeMetrics"},
             "versions": [{"name": "v1beta1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


@pytest.fixture()
def node_metrics_api(api_client, core_v1):
    """metrics.k8s.io/v1beta1 nodes served by a CRD (metrics-server's path and shape), unless
    the cluster has the real API (then this test cannot set the usage and is skipped)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    ext = client.ApiextensionsV1Api(api_client)
    try:
        ext.read_custom_resource_definition("nodes.metrics.k8s.io")   # ours, left by an interrupted run
    except ApiException:
        if _served(api_client):
            pytest.skip("the cluster serves metrics.k8s.io itself")
        ext.create_custom_resource_definition(METRICS_CRD)
    wait_for("the metrics API served", lambda: _served(api_client), 30)
    try:
        yield client.CustomObjectsApi(api_client)
    finally:
        ext.delete_custom_resource_definition("nodes.metrics.k8s.io")


def _served(api_client) -> bool:
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    try:
        client.CustomObjectsApi(api_client).list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
        return True
    except ApiException:
        return False


def test_cpu_and_memory_of_the_pools_nodes_reach_the_formula(operator, objects, node_metrics_api):
    objects.create({"kind": "Pool", "metadata": {"name": "use"}, "spec": {
        "nodeGroup": {"provider": "kwok", "kwok": {"capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"}}},
        "enableAutoScale": True, "autoScaleEvaluationInterval": "PT2S",
        "autoScaleFormula": "$TargetDedicatedNodes = 2;"}})
    wait_for("2 nodes", lambda: _members(objects, "use") == 2, 120)
    nodes = [c["spec"]["nodeName"] for c in objects.list("ComputeNode")]
    for name, cpu, mem in zip(nodes, ("1", "3"), ("2Gi", "6Gi")):   # 25% and 75% of 4 CPUs; 2 and 6 GiB
        node_metrics_api.create_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes", {
            "apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetrics", "metadata": {"name": name},
            "timestamp": "2026-01-01T00:00:00Z", "window": "30s", "usage": {"cpu": cpu, "memory": mem}})
    try:
        objects.patch("Pool", "use", {"spec": {"autoScaleFormula": (
            "c = avg($CPUPercent.GetSample(1)); m = avg($MemoryBytes.GetSample(1)); "
            "n = avg($SampleNodeCount.GetSample(1)); $TargetDedicatedNodes = 2;")}})
        run = wait_for("usage in the formula", lambda: (lambda r: r if "$c=" in (r.get("results") or "") else None)(
            objects.status("Pool", "use").get("autoScaleRun") or {}), 60)
        assert "$c=50" in run["results"] and "$m=4096" in run["results"] and "$n=2" in run["results"], run
    finally:
        for name in nodes:
            node_metrics_api.delete_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes", name)


def test_the_formulas_node_deallocation_option_is_what_a_shrink_applies(operator, objects):
    from kit import job, sim, task
    objects.create({"kind": "Pool", "metadata": {"name": "dealloc"}, "spec": {
        "nodeGroup": {"provider": "kwok"}, "enableAutoScale": True, "autoScaleEvaluationInterval": "PT2S",
        "nodeDeallocationOption": "requeue", "autoScaleFormula": "$TargetDedicatedNodes = 1;"}})
    wait_for("1 node", lambda: _members(objects, "dealloc") == 1, 120)
    objects.create(job("dj", "dealloc"))
    objects.create(task("long", "dj", annotations=sim(8)))
    objects.wait_state("Task", "long", "running", 60)
    # the pool's own option says requeue; the formula says taskcompletion, and wins
    objects.patch("Pool", "dealloc", {"spec": {"autoScaleFormula":
                                               "$TargetDedicatedNodes = 0; $NodeDeallocationOption = taskcompletion;"}})
    st = objects.wait_state("Task", "long", "completed", 60)
    info = st["executionInfo"]
    assert info["result"] == "success" and info.get("requeueCount", 0) == 0, info
    wait_for("the node released once its task ended", lambda: _members(objects, "dealloc") == 0, 60)
