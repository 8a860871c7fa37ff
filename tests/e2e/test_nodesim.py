"""The node simulator (hack/nodesim.py) against a real API server and controller manager.

Every test makes its own fake node(s) named sim-<uuid>, tainted kwok.x-k8s.io/node=fake:NoSchedule
so the real scheduler puts nothing there, binds its pods with spec.nodeName, and deletes the
nodes at the end.
"""
from __future__ import annotations

import time
import uuid

import pytest

pytestmark = pytest.mark.e2e

FAKE = {"kwok.x-k8s.io/node": "fake"}
TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def wait_for(fn, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def ready_status(core_v1, name: str) -> str | None:
    node = core_v1.read_node(name)
    for c in node.status.conditions or []:
        if c.type == "Ready":
            return c.status
    return None


@pytest.fixture()
def make_node(core_v1, nodesim):
    from kubernetes.client.rest import ApiException
    made = []

    def make(annotations: dict | None = None, capacity: dict | None = None) -> str:
        name = f"sim-{uuid.uuid4().hex[:8]}"
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {**FAKE, **(annotations or {})},
                             "labels": {"type": "kwok", "kubernetes.io/hostname": name, "podbatch.io/test": "1"}},
                "spec": {"taints": [TAINT]}}
        if capacity:
            body["status"] = {"capacity": capacity}
        core_v1.create_node(body)
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            core_v1.delete_node(name)
        except ApiException:
            pass


@pytest.fixture()
def ready_node(core_v1, make_node):
    name = make_node()
    wait_for(lambda: ready_status(core_v1, name) == "True", 30, what=f"node {name} Ready")
    return name


def make_pod(core_v1, namespace: str, node: str, annotations: dict | None = None, restart: str = "Never",
             deadline: int | None = None, init: bool = False, containers: int = 1) -> str:
    from kubernetes.client.rest import ApiException
    name = f"p-{uuid.uuid4().hex[:8]}"
    spec = {"nodeName": node, "restartPolicy": restart, "tolerations": [TOLERATION],
            "automountServiceAccountToken": False,
            "containers": [{"name": f"c{i}", "image": "busybox", "command": ["true"]} for i in range(containers)]}
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    if init:
        spec["initContainers"] = [{"name": "init", "image": "busybox", "command": ["true"]}]
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}
    for attempt in range(60):   # a fresh namespace's default ServiceAccount may not exist yet
        try:
            core_v1.create_namespaced_pod(namespace, body)
            return name
        except ApiException as e:
            if e.status != 403 or "serviceaccount" not in (e.body or "").lower() or attempt == 59:
                raise
            time.sleep(0.5)
    return name


def phase_of(core_v1, namespace, name, phases):
    pod = core_v1.read_namespaced_pod(name, namespace)
    return pod if pod.status.phase in phases else None


def test_node_becomes_ready(core_v1, make_node):
    from kubernetes import client
    plain = make_node()
    pinned = make_node(annotations={"sim.podbatch.io/ip": "10.99.0.7"}, capacity={"cpu": "8", "memory": "16Gi"})
    for name in (plain, pinned):
        wait_for(lambda: ready_status(core_v1, name) == "True", 30, what=f"node {name} Ready")
    node = core_v1.read_node(plain)
    conds = {c.type: c.status for c in node.status.conditions}
    assert conds == {"Ready": "True", "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False"}
    assert node.status.capacity["cpu"] == "32" and node.status.capacity["pods"] == "110"
    assert node.status.allocatable["memory"] == "256Gi"
    assert node.status.node_info.kubelet_version
    ips = [a.address for a in node.status.addresses if a.type == "InternalIP"]
    assert len(ips) == 1 and ips[0].startswith("10.254.")
    lease = client.CoordinationV1Api(core_v1.api_client).read_namespaced_lease(plain, "kube-node-lease")
    assert lease.spec.holder_identity == plain and lease.spec.lease_duration_seconds == 40
    assert lease.spec.renew_time is not None
    node = core_v1.read_node(pinned)
    assert [a.address for a in node.status.addresses if a.type == "InternalIP"] == ["10.99.0.7"]
    assert node.status.capacity["cpu"] == "8" and node.status.allocatable["memory"] == "16Gi"


def test_pods_succeed_and_fail_with_exit_code(core_v1, namespace, ready_node):
    ok = make_pod(core_v1, namespace, ready_node, {"sim.podbatch.io/duration": "3"}, init=True)
    bad = make_pod(core_v1, namespace, ready_node, {"sim.podbatch.io/exit-code": "3"})
    instant = make_pod(core_v1, namespace, ready_node, containers=2)

    running = wait_for(lambda: phase_of(core_v1, namespace, ok, ("Running",)), 20, 0.2, f"pod {ok} Running")
    assert running.status.pod_ip and running.status.host_ip.startswith("10.254.")
    assert running.status.start_time is not None
    cs = running.status.container_statuses[0]
    assert cs.ready and cs.state.running.started_at is not None
    assert running.status.init_container_statuses[0].state.terminated.exit_code == 0
    assert {c.type: c.status for c in running.status.conditions} == {
        "PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}

    pod = wait_for(lambda: phase_of(core_v1, namespace, ok, ("Succeeded", "Failed")), 30, what=f"pod {ok} done")
    assert pod.status.phase == "Succeeded"
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 0 and term.reason == "Completed"
    assert (term.finished_at - term.started_at).total_seconds() >= 2

    pod = wait_for(lambda: phase_of(core_v1, namespace, bad, ("Succeeded", "Failed")), 30, what=f"pod {bad} done")
    assert pod.status.phase == "Failed"
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 3 and term.reason == "Error"

    pod = wait_for(lambda: phase_of(core_v1, namespace, instant, ("Succeeded", "Failed")), 30,
                   what=f"pod {instant} done")
    assert pod.status.phase == "Succeeded"
    assert [c.state.terminated.exit_code for c in pod.status.container_statuses] == [0, 0]


def test_start_delay_keeps_pod_pending(core_v1, namespace, ready_node):
    name = make_pod(core_v1, namespace, ready_node, {"sim.podbatch.io/start-delay": "3",
                                                     "sim.podbatch.io/duration": "1"})
    pod = wait_for(lambda: (p := core_v1.read_namespaced_pod(name, namespace)).status.start_time and p, 15,
                   what="startTime set")
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "ContainerCreating"
    pod = wait_for(lambda: phase_of(core_v1, namespace, name, ("Succeeded",)), 30, what="Succeeded")
    started = pod.status.container_statuses[0].state.terminated.started_at
    assert (started - pod.status.start_time).total_seconds() >= 2


def test_active_deadline_fails_long_pod(core_v1, namespace, ready_node):
    name = make_pod(core_v1, namespace, ready_node, {"sim.podbatch.io/duration": "600"}, deadline=3)
    wait_for(lambda: phase_of(core_v1, namespace, name, ("Running",)), 20, 0.2, "Running")
    pod = wait_for(lambda: phase_of(core_v1, namespace, name, ("Succeeded", "Failed")), 30, what="deadline")
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "DeadlineExceeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137


def test_pod_deletion_completes(core_v1, namespace, ready_node):
    from kubernetes.client.rest import ApiException
    forever = make_pod(core_v1, namespace, ready_node, restart="Always")   # no duration: runs until deleted
    wait_for(lambda: phase_of(core_v1, namespace, forever, ("Running",)), 20, 0.2, "Running")
    time.sleep(1.5)
    assert core_v1.read_namespaced_pod(forever, namespace).status.phase == "Running"
    core_v1.delete_namespaced_pod(forever, namespace)   # default grace period: needs the "kubelet" to confirm

    def gone():
        try:
            core_v1.read_namespaced_pod(forever, namespace)
            return False
        except ApiException as e:
            return e.status == 404
    wait_for(gone, 20, what=f"pod {forever} deleted")


def test_heartbeat_stop_makes_node_not_ready(core_v1, namespace, ready_node):
    name = make_pod(core_v1, namespace, ready_node, {"sim.podbatch.io/duration": "600"})
    wait_for(lambda: phase_of(core_v1, namespace, name, ("Running",)), 20, 0.2, "Running")

    core_v1.patch_node(ready_node, {"metadata": {"annotations": {"sim.podbatch.io/heartbeat": "stopped"}}})
    t0 = time.time()
    # controller manager: --node-monitor-grace-period (16 s on the local cluster, 40 s by default)
    status = wait_for(lambda: (s := ready_status(core_v1, ready_node)) != "True" and s, 120, 1.0, "NotReady")
    assert status in ("False", "Unknown")
    print(f"node NotReady ({status}) {time.time() - t0:.0f}s after its heartbeat stopped")
    frozen = make_pod(core_v1, namespace, ready_node)   # bound while stopped: stays Pending
    time.sleep(2)
    assert core_v1.read_namespaced_pod(frozen, namespace).status.phase == "Pending"

    core_v1.patch_node(ready_node, {"metadata": {"annotations": {"sim.podbatch.io/heartbeat": None}}})
    wait_for(lambda: ready_status(core_v1, ready_node) == "True", 30, what="Ready again after resume")
    wait_for(lambda: phase_of(core_v1, namespace, frozen, ("Succeeded",)), 30, what="frozen pod resumes")
