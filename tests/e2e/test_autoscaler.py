"""autoscaler pools on the local cluster, against the fake cluster-autoscaler of
hack/fakeca.py (issue 12): placeholder pods ask for nodes, the Nodes that come are adopted
(with their node preparation), released nodes go back and the autoscaler removes them;
a gang's nodes are asked for together."""
from __future__ import annotations

import calendar
import subprocess
import sys
import time

import pytest

from kit import LOG_DIR, ROOT, job, sim, task, wait_for

pytestmark = pytest.mark.e2e
GROUP_LABEL = "sim.podbatch.io/node-group"


@pytest.fixture()
def fakeca(operator, objects, core_v1, kubeconfig):
    """The fake cluster-autoscaler with a node group for this test (nodes labelled with the
    test's namespace as their shape). Afterwards the test's pools go first, then the group's
    Nodes (removed by the fake autoscaler itself once empty)."""
    shape = objects.ns
    log = open(LOG_DIR / f"fakeca-{shape}.log", "ab")
    proc = subprocess.Popen([sys.executable, str(ROOT / "hack" / "fakeca.py"), "--kubeconfig", kubeconfig,
                             "--node-group", f"{shape[-40:]}:sim.podbatch.io/shape={shape}:6", "--interval", "0.3",
                             "--provision-delay", "1", "--unneeded", "3"], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield shape
    finally:
        for p in objects.list("Pool"):
            objects.delete("Pool", p["metadata"]["name"])
        wait_for("the test's pools deleted", lambda: not objects.list("Pool"), timeout=90)
        wait_for("the group's nodes removed", lambda: not group_nodes(core_v1, shape), timeout=60)
        proc.terminate()
        proc.wait(10)


def group_nodes(core_v1, shape: str) -> list:
    return core_v1.list_node(label_selector=f"sim.podbatch.io/shape={shape}").items


def autoscaler_pool(name: str, shape: str, formula: str, **spec) -> dict:
    return {"kind": "Pool", "metadata": {"name": name}, "spec": {
        "nodeGroup": {"provider": "autoscaler", "autoscaler": {
            "nodeSelector": {"sim.podbatch.io/shape": shape},
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]}},
        "enableAutoScale": True, "autoScaleEvaluationInterval": "PT3S", "autoScaleFormula": formula, **spec}}


def test_an_autoscaler_pool_grows_from_zero_with_its_queue_and_shrinks_back(fakeca, objects, core_v1):
    objects.create(autoscaler_pool("grow", fakeca, "$TargetDedicatedNodes = min(3, max($PendingTasks.GetSample(1)));",
                                   startTask={"commandLine": "/bin/true", "waitForSuccess": True}))
    time.sleep(3)
    assert not group_nodes(core_v1, fakeca), "an empty queue asks for no node"
    objects.create(job("work", "grow", onAllTasksComplete="terminatejob"))
    for i in range(3):
        objects.create(task(f"w{i}", "work", annotations=sim(6)))

    wait_for("3 nodes adopted by the pool", lambda: (objects.status("Pool", "grow").get("currentDedicatedNodes") or 0) == 3, 120)
    nodes = group_nodes(core_v1, fakeca)
    assert len(nodes) == 3 and all((n.metadata.labels or {}).get("podbatch.io/pool") for n in nodes)
    assert all((n.metadata.annotations or {}).get("cluster-autoscaler.kubernetes.io/scale-down-disabled") == "true"
               for n in nodes), "a node of the pool is not the autoscaler's to remove"
    assert objects.wait_job_done("work", 120)["taskCounts"]["succeeded"] == 3
    for c in objects.list("ComputeNode"):
        assert (c["status"].get("startTaskInfo") or {}).get("result") == "success", c["status"]   # node preparation ran
    placeholders = core_v1.list_namespaced_pod(objects.ns, label_selector="podbatch.io/role=placeholder").items
    assert not placeholders, [p.metadata.name for p in placeholders]

    # an empty queue: the formula says 0, the nodes are released and the autoscaler removes them
    wait_for("the pool back at 0", lambda: (objects.status("Pool", "grow").get("currentDedicatedNodes") or 0) == 0, 120)
    wait_for("the released nodes removed by the autoscaler", lambda: not group_nodes(core_v1, fakeca), 60)


def test_a_gangs_nodes_are_asked_for_together(fakeca, objects, core_v1):
    objects.create(autoscaler_pool("mpi", fakeca, "$TargetDedicatedNodes = min(4, max($ActiveTasks.GetSample(1)));",
                                   enableInterNodeCommunication=True))
    objects.create(job("gang", "mpi", onAllTasksComplete="terminatejob"))
    objects.create(task("g", "gang", annotations=sim(2), multiInstanceSettings={"numberOfInstances": 4}))
    st = objects.wait_state("Task", "g", "completed", 150)
    assert st["executionInfo"]["result"] == "success"
    assert len({x["nodeName"] for x in st["subtasks"]}) == 4
    made = sorted(calendar.timegm(n.metadata.creation_timestamp.utctimetuple()) for n in group_nodes(core_v1, fakeca))
    assert len(made) >= 4 and made[3] - made[0] <= 5, f"the 4 nodes were asked for one by one: {made}"


def test_a_node_the_autoscaler_cannot_bring_shows_in_resize_errors(fakeca, objects):
    objects.create({"kind": "Pool", "metadata": {"name": "nowhere"}, "spec": {
        "nodeGroup": {"provider": "autoscaler", "autoscaler": {"nodeSelector": {"sim.podbatch.io/shape": "no-such-group"},
                                                               "tolerations": [{"operator": "Exists"}]}},
        "targetDedicatedNodes": 1}})
    err = wait_for("a resize error", lambda: (objects.status("Pool", "nowhere").get("resizeErrors") or [None])[0], 120)
    assert "autoscaler" in err["message"] and "nodeSelector" in err["message"] or "node(s)" in err["message"], err


@pytest.fixture()
def provisioning_api(api_client):
    """cluster-autoscaler's ProvisioningRequest API (the trimmed CRD of hack/fakeca-crds/),
    served for one test, so the autoscaler provider asks for a gang's nodes atomically."""
    from kubernetes import client
    from podbatch.cli.kube import install_crds
    install_crds(api_client, ROOT / "hack" / "fakeca-crds")
    try:
        yield
    finally:
        ext = client.ApiextensionsV1Api(api_client)
        ext.delete_custom_resource_definition("provisioningrequests.autoscaling.x-k8s.io")
        wait_for("the ProvisioningRequest API gone", lambda: "provisioningrequests.autoscaling.x-k8s.io" not in {
            c.metadata.name for c in ext.list_custom_resource_definition().items}, 60)


def _fakeca_log(shape: str) -> str:
    return (LOG_DIR / f"fakeca-{shape}.log").read_text()


def test_a_gang_is_provisioned_atomically_through_a_provisioning_request(provisioning_api, fakeca, objects, core_v1):
    objects.create(autoscaler_pool("atom", fakeca, "$TargetDedicatedNodes = min(6, max($ActiveTasks.GetSample(1)));",
                                   enableInterNodeCommunication=True))
    objects.create(job("gang", "atom", onAllTasksComplete="terminatejob"))
    objects.create(task("g", "gang", annotations=sim(2), multiInstanceSettings={"numberOfInstances": 3}))
    st = objects.wait_state("Task", "g", "completed", 150)
    assert st["executionInfo"]["result"] == "success" and len({x["nodeName"] for x in st["subtasks"]}) == 3
    log = _fakeca_log(fakeca)
    assert "Provisioned (3 nodes of" in log, log[-2000:]


def test_a_gang_the_autoscaler_cannot_provision_whole_gets_no_node(provisioning_api, fakeca, objects, core_v1):
    objects.create(autoscaler_pool("toobig", fakeca, "$TargetDedicatedNodes = min(8, max($ActiveTasks.GetSample(1)));",
                                   enableInterNodeCommunication=True))
    objects.create(job("big", "toobig"))
    objects.create(task("g7", "big", annotations=sim(2), multiInstanceSettings={"numberOfInstances": 7}))   # the group's max is 6
    err = wait_for("the failed request in resizeErrors", lambda: next(
        (e for e in objects.status("Pool", "toobig").get("resizeErrors") or [] if "ProvisioningRequest" in e["message"]), None), 90)
    assert "max size" in err["message"], err
    assert not group_nodes(core_v1, fakeca), "a half-provisioned gang: the request is all or nothing"
