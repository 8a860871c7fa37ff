"""clusterapi pools on the local cluster, against the fake Cluster API of hack/fakecapi.py.

A Pool scales a MachineDeployment through its scale subresource and adopts the Nodes of
its Machines; when it shrinks, the Machine of the node podbatch picked (the idle one) is
the one deleted. The fake Cluster API runs for each test, scoped to the test's namespace.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from kit import LOG_DIR, ROOT, job, sim, task, wait_for

pytestmark = pytest.mark.e2e

CAPI, V = "cluster.x-k8s.io", "v1beta1"
POOL_LABEL = "podbatch.io/pool"
DEPLOYMENT_LABEL = "cluster.x-k8s.io/deployment-name"


@pytest.fixture(scope="module")
def capi_crds(api_client):
    from podbatch.cli.kube import install_crds
    install_crds(api_client, ROOT / "hack" / "fakecapi-crds")


@pytest.fixture()
def fakecapi(operator, objects, custom_api, core_v1, kubeconfig, capi_crds):
    """The fake Cluster API for this test's namespace. Afterwards the test's pools go first
    (their nodes released), then the MachineDeployments, and only when every Machine and
    its Node is gone does the fake Cluster API stop."""
    ns = objects.ns
    log_path = LOG_DIR / f"fakecapi-{ns}.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, str(ROOT / "hack" / "fakecapi.py"), "--kubeconfig", kubeconfig,
                             "--namespace-prefix", ns, "--interval", "0.3"], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield log_path
    finally:
        for p in objects.list("Pool"):
            objects.delete("Pool", p["metadata"]["name"])
        wait_for("the test's pools deleted", lambda: not objects.list("Pool"), timeout=60)
        for md in custom_api.list_namespaced_custom_object(CAPI, V, ns, "machinedeployments")["items"]:
            custom_api.delete_namespaced_custom_object(CAPI, V, ns, "machinedeployments", md["metadata"]["name"])
        wait_for("the Machines and their Nodes gone", lambda: not machines(custom_api, ns) and not [
            n for n in core_v1.list_node(label_selector=DEPLOYMENT_LABEL).items if n.metadata.name.startswith(ns)], timeout=60)
        proc.terminate()
        proc.wait(10)


def machine_deployment(custom_api, ns: str, name: str, replicas: int = 0) -> dict:
    return custom_api.create_namespaced_custom_object(CAPI, V, ns, "machinedeployments", {
        "apiVersion": f"{CAPI}/{V}", "kind": "MachineDeployment", "metadata": {"name": name},
        "spec": {"clusterName": "fake", "replicas": replicas}})


def replicas(custom_api, ns: str, name: str) -> int:
    return custom_api.get_namespaced_custom_object(CAPI, V, ns, "machinedeployments", name)["spec"]["replicas"]


def machines(custom_api, ns: str) -> list[dict]:
    return custom_api.list_namespaced_custom_object(CAPI, V, ns, "machines")["items"]


def capi_pool(name: str, target: str, nodes: int) -> dict:
    return {"kind": "Pool", "metadata": {"name": name}, "spec": {
        "nodeGroup": {"provider": "clusterapi", "clusterapi": {"scaleTargetRef": {"name": target}}},
        "targetDedicatedNodes": nodes}}


def node_states(objects, pool: str) -> dict[str, str]:
    return {c["spec"]["nodeName"]: (c.get("status") or {}).get("state") or ""
            for c in objects.list("ComputeNode") if c["spec"]["poolName"] == pool}


def settled(objects, pool: str, states: list[str]):
    """The pool steady with ComputeNodes in exactly these states; its status then."""
    st = objects.status("Pool", pool)
    got = node_states(objects, pool)
    if st.get("allocationState") == "steady" and st.get("currentDedicatedNodes") == len(states) and sorted(got.values()) == sorted(states):
        return st
    return None


def test_pool_scales_its_machine_deployment_and_the_idle_machine_goes(objects, custom_api, core_v1, fakecapi):
    ns = objects.ns
    machine_deployment(custom_api, ns, "workers")
    objects.create(capi_pool("capi", "workers", 2))

    # up: replicas follow the target, the Machines' Nodes are adopted and become idle
    st = wait_for("2 idle nodes in a steady pool", lambda: settled(objects, "capi", ["idle", "idle"]), timeout=60)
    assert not st.get("resizeErrors") and replicas(custom_api, ns, "workers") == 2
    nodes = sorted(node_states(objects, "capi"))
    assert sorted(m["status"]["nodeRef"]["name"] for m in machines(custom_api, ns)) == nodes
    for name in nodes:
        node = core_v1.read_node(name)
        assert node.metadata.labels[POOL_LABEL] == f"{ns}.capi" and node.metadata.labels[DEPLOYMENT_LABEL] == "workers"
        # the taint, eventually: kube-controller-manager 1.20 can drop it once, lifting the
        # node's not-ready taint from an older copy of the list; the operator puts it back
        wait_for(f"the pool's taint on {name}", lambda: any(t.key == POOL_LABEL and t.effect == "NoSchedule"
                                                           for t in core_v1.read_node(name).spec.taints or []), timeout=30)

    # a task runs on one of them
    objects.create(job("j", "capi"))
    objects.create(task("busy", "j", annotations=sim(duration=600)))
    busy = wait_for("task busy running", lambda: (lambda s: s.get("state") == "running" and s)(objects.status("Task", "busy")), timeout=60)
    busy_node = busy["nodeInfo"]["nodeName"]
    assert busy_node in nodes
    idle_node = next(n for n in nodes if n != busy_node)
    by_node = {m["status"]["nodeRef"]["name"]: m["metadata"]["name"] for m in machines(custom_api, ns)}
    busy_machine, idle_machine = by_node[busy_node], by_node[idle_node]

    # down by one: the idle node's Machine is marked and deleted, the busy one stays
    objects.patch("Pool", "capi", {"spec": {"targetDedicatedNodes": 1}})
    wait_for("the idle node gone", lambda: idle_node not in {n.metadata.name for n in core_v1.list_node().items}, timeout=60)
    assert replicas(custom_api, ns, "workers") == 1
    assert [m["metadata"]["name"] for m in machines(custom_api, ns)] == [busy_machine]
    # ... because podbatch marked it (unmarked, the fake MachineSet would take the newest)
    assert f"deleting Machine {idle_machine} (marked)" in fakecapi.read_text()
    wait_for("one running node", lambda: settled(objects, "capi", ["running"]), timeout=30)
    st = objects.status("Task", "busy")
    assert st["state"] == "running" and st["nodeInfo"]["nodeName"] == busy_node and st["executionInfo"]["requeueCount"] == 0

    # down to zero: the busy node goes too (its task requeued, nodeDeallocationOption requeue)
    objects.patch("Pool", "capi", {"spec": {"targetDedicatedNodes": 0}})
    wait_for("no Machine left", lambda: not machines(custom_api, ns), timeout=60)
    assert replicas(custom_api, ns, "workers") == 0
    wait_for("the pool steady and empty", lambda: settled(objects, "capi", []), timeout=30)
    st = wait_for("task busy requeued", lambda: (lambda s: s.get("state") == "active" and s)(objects.status("Task", "busy")), timeout=30)
    assert st["executionInfo"]["requeueCount"] == 1 and st["executionInfo"]["retryCount"] == 0


def test_a_missing_scale_target_is_a_resize_error_until_it_exists(objects, custom_api, core_v1, fakecapi):
    ns = objects.ns
    objects.create(capi_pool("lost", "nowhere", 1))

    def error():
        errs = objects.status("Pool", "lost").get("resizeErrors") or []
        return next((e for e in errs if "nowhere" in e["message"]), None)
    err = wait_for("a resize error naming the missing target", error, timeout=30)
    assert f"MachineDeployment {ns}/nowhere ({CAPI}/{V}) of nodeGroup.clusterapi.scaleTargetRef does not exist" in err["message"]
    conds = {c["type"]: c for c in objects.status("Pool", "lost")["conditions"]}
    assert conds["ResizeError"]["status"] == "True" and "nowhere" in conds["ResizeError"]["message"]
    wait_for("a ScaleTargetNotFound Event", lambda: [e for e in core_v1.list_namespaced_event(ns).items
                                                     if e.reason == "ScaleTargetNotFound" and e.involved_object.name == "lost"], timeout=30)

    # the target appears: the pool grows into it and the error clears
    machine_deployment(custom_api, ns, "nowhere")
    st = wait_for("1 idle node", lambda: settled(objects, "lost", ["idle"]), timeout=60)
    assert not st.get("resizeErrors") and replicas(custom_api, ns, "nowhere") == 1
