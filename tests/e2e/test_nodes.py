"""Compute nodes on the local cluster: start tasks, node directories, lost nodes and the
node operations (disable/enable scheduling, reboot, reimage).

kwok nodes (run by hack/nodesim.py) cover the state machine; the real node `localhost`
(kubelet + containerd) covers what must really happen on disk. Only one test at a time
may own the real node: every real-node test lives in this module, waits until the node
belongs to no pool, and gives it back (pool deleted, label gone) even when it fails.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
import uuid

import pytest

from kit import GROUP, VERSION, job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e

POOL_LABEL = "podbatch.io/pool"
REAL_NODE = os.environ.get("PODBATCH_REAL_NODE", "localhost")
ON_THIS_MACHINE = REAL_NODE == "localhost"   # the local cluster's kubelet is this machine: its node dirs are here
NODE_ROOT = "/var/lib/podbatch"


# ------------------------------------------------------------------ helpers
def cnode_of(objects, pool: str, node_name: str | None = None) -> dict | None:
    for c in objects.list("ComputeNode"):
        if c["spec"]["poolName"] == pool and (node_name is None or c["spec"]["nodeName"] == node_name):
            return c
    return None


def cnode_state(objects, name: str) -> str | None:
    return objects.status("ComputeNode", name).get("state")


def wait_until(what: str, get, pred, timeout: float) -> dict:
    """Poll get() until pred(value); on timeout the failure shows the last value in full."""
    seen: dict = {}

    def check():
        seen["last"] = value = get()
        return value if pred(value) else None
    try:
        return wait_for(what, check, timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast status: {seen.get('last')!r}"[:4000]) from None


def wait_cnode_state(objects, name: str, state: str, timeout: float = 90) -> dict:
    return wait_until(f"ComputeNode {name} {state}", lambda: objects.status("ComputeNode", name),
                      lambda st: st.get("state") == state, timeout)


def wait_idle_nodes(objects, pool: str, count: int, timeout: float = 90) -> list[dict]:
    def idle():
        cs = [c for c in objects.list("ComputeNode") if c["spec"]["poolName"] == pool]
        ok = len(cs) == count and all((c.get("status") or {}).get("state") == "idle" for c in cs)
        return sorted(cs, key=lambda c: c["metadata"]["name"]) if ok else None
    return wait_for(f"{count} idle nodes in pool {pool}", idle, timeout)


def task_status(objects, name: str) -> dict:
    return objects.status("Task", name)


def wait_task(objects, name: str, pred, what: str, timeout: float = 90) -> dict:
    return wait_until(f"task {name} {what}", lambda: task_status(objects, name), pred, timeout)


def running(st: dict) -> bool:
    return st.get("state") == "running"


def completed(st: dict) -> bool:
    return st.get("state") == "completed"


def exec_info(st: dict) -> dict:
    return st.get("executionInfo") or {}


def prep_pods(core_v1, ns: str, cnode: str) -> list:
    return core_v1.list_namespaced_pod(ns, label_selector=f"podbatch.io/role=nodeprep,podbatch.io/node={cnode}").items


def succeeded_boots(core_v1, ns: str, cnode: str) -> set[str]:
    return {(p.metadata.annotations or {}).get("podbatch.io/boot") for p in prep_pods(core_v1, ns, cnode)
            if p.status.phase == "Succeeded"}


class StateLog:
    """Every state a ComputeNode passes through, seen through a watch (so short-lived
    states such as `rebooting` are not missed by polling)."""

    def __init__(self, custom_api, ns: str, name: str) -> None:
        self.api, self.ns, self.name = custom_api, ns, name
        self.states: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kubernetes import watch
        while not self._stop.is_set():
            try:
                w = watch.Watch()
                for ev in w.stream(self.api.list_namespaced_custom_object, GROUP, VERSION, self.ns, "computenodes",
                                   field_selector=f"metadata.name={self.name}", timeout_seconds=2):
                    st = ((ev["object"].get("status") or {}).get("state"))
                    if st and (not self.states or self.states[-1] != st):
                        self.states.append(st)
                    if self._stop.is_set():
                        break
            except Exception:
                time.sleep(0.2)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(5)
        return self.states


@pytest.fixture()
def pools_cleaned(operator, objects):
    """Delete this test's pools (and wait until they are gone) before the namespace goes,
    so no Node is left behind when the session's operator stops."""
    yield
    for p in objects.list("Pool"):
        objects.delete("Pool", p["metadata"]["name"])
    wait_for("the test's pools deleted", lambda: not objects.list("Pool"), timeout=120)


# ------------------------------------------------------------------ kwok nodes
@pytest.mark.e2e
def test_node_with_stopped_heartbeat_is_unknown_then_unusable_and_its_task_is_requeued(kubeconfig, crds, nodesim, custom_api, core_v1):
    """A NotReady node keeps its tasks (`unknown`) for the grace, then is `unusable` and its
    task is requeued. Its own operator with a 20 s grace (the default is 300 s)."""
    import uuid

    from kubernetes import client

    from kit import Objects, OperatorProcess
    ns = f"pbgrace-{uuid.uuid4().hex[:6]}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    op = OperatorProcess(kubeconfig, f"operator-{ns}", env={"PODBATCH_NAMESPACES": ns,
                                                            "PODBATCH_NODE_LOST_GRACE_SECONDS": "20"}).start()
    objects = Objects(custom_api, ns)
    try:
        objects.create(kwok_pool("hb", 2))
        wait_idle_nodes(objects, "hb", 2)
        objects.create(job("j", "hb"))
        objects.create(task("t", "j", annotations=sim(120)))
        st = wait_task(objects, "t", running, "running")
        lost_node, lost_cnode = st["nodeInfo"]["nodeName"], st["nodeInfo"]["nodeId"]
        # the next attempt of the task need not take another two minutes
        objects.patch("Task", "t", {"metadata": {"annotations": sim(1)}})

        core_v1.patch_node(lost_node, {"metadata": {"annotations": {"sim.podbatch.io/heartbeat": "stopped"}}})
        wait_cnode_state(objects, lost_cnode, "unknown", timeout=90)
        st = task_status(objects, "t")
        assert running(st) and st["attempt"] == 1, f"requeued while the node was only out of touch: {st}"
        wait_cnode_state(objects, lost_cnode, "unusable", timeout=60)

        st = wait_task(objects, "t", completed, "completed after the requeue", timeout=60)
        assert exec_info(st)["result"] == "success" and exec_info(st)["exitCode"] == 0
        assert exec_info(st)["requeueCount"] == 1 and exec_info(st)["retryCount"] == 0
        assert st["nodeInfo"]["nodeName"] != lost_node
        assert st["attempt"] == 2
        pool = objects.status("Pool", "hb")
        wait_for("pool counts the unusable node",
                 lambda: (objects.status("Pool", "hb").get("nodeCounts") or {}).get("unusable") == 1, timeout=20)
        assert pool["currentDedicatedNodes"] == 2
    finally:
        objects.delete("Pool", "hb")   # its finalizer needs the operator
        wait_for("the pool gone", lambda: not objects.list("Pool"), 90)
        op.stop()
        core_v1.delete_namespace(ns)


@pytest.mark.e2e
def test_disable_scheduling_with_taskcompletion_lets_the_task_finish(operator, objects, pools_cleaned):
    objects.create(kwok_pool("dis", 2))
    wait_idle_nodes(objects, "dis", 2)
    objects.create(job("j", "dis"))
    objects.create(task("a", "j", annotations=sim(8)))
    st = wait_task(objects, "a", running, "running")
    node, cnode = st["nodeInfo"]["nodeName"], st["nodeInfo"]["nodeId"]

    objects.patch("ComputeNode", cnode, {"spec": {"schedulingState": "disabled", "nodeDisableSchedulingOption": "taskcompletion"}})
    wait_for("scheduling disabled in status", lambda: objects.status("ComputeNode", cnode).get("schedulingState") == "disabled", 30)
    assert running(task_status(objects, "a")), "taskcompletion must not stop the running task"

    st = wait_task(objects, "a", completed, "completed", timeout=60)
    assert exec_info(st)["result"] == "success" and exec_info(st)["exitCode"] == 0
    assert exec_info(st)["requeueCount"] == 0 and exec_info(st)["retryCount"] == 0
    assert st["nodeInfo"]["nodeName"] == node and st["attempt"] == 1
    wait_cnode_state(objects, cnode, "offline", timeout=30)

    # the disabled node is free, yet new tasks go to the other node only
    for name in ("b", "c", "d"):
        objects.create(task(name, "j", annotations=sim(1)))
    for name in ("b", "c", "d"):
        st = wait_task(objects, name, completed, "completed", timeout=60)
        assert exec_info(st)["result"] == "success"
        assert st["nodeInfo"]["nodeName"] != node, f"task {name} ran on the disabled node"
    assert cnode_state(objects, cnode) == "offline"

    objects.patch("ComputeNode", cnode, {"spec": {"schedulingState": "enabled"}})
    wait_cnode_state(objects, cnode, "idle", timeout=30)
    assert objects.status("ComputeNode", cnode)["schedulingState"] == "enabled"


@pytest.mark.e2e
def test_disable_scheduling_with_requeue_moves_the_task(operator, objects, pools_cleaned):
    objects.create(kwok_pool("req", 2))
    wait_idle_nodes(objects, "req", 2)
    objects.create(job("j", "req"))
    objects.create(task("t", "j", annotations=sim(60)))
    st = wait_task(objects, "t", running, "running")
    node, cnode = st["nodeInfo"]["nodeName"], st["nodeInfo"]["nodeId"]
    objects.patch("Task", "t", {"metadata": {"annotations": sim(2)}})   # the next attempt is short

    objects.patch("ComputeNode", cnode, {"spec": {"schedulingState": "disabled", "nodeDisableSchedulingOption": "requeue"}})
    st = wait_task(objects, "t", completed, "completed elsewhere", timeout=60)
    assert exec_info(st)["result"] == "success" and exec_info(st)["exitCode"] == 0
    assert exec_info(st)["requeueCount"] == 1 and exec_info(st)["retryCount"] == 0
    assert st["nodeInfo"]["nodeName"] != node and st["attempt"] == 2
    wait_cnode_state(objects, cnode, "offline", timeout=30)

    objects.patch("ComputeNode", cnode, {"spec": {"schedulingState": "enabled"}})
    wait_cnode_state(objects, cnode, "idle", timeout=30)


@pytest.mark.e2e
def test_reboot_and_reimage_run_the_start_task_again(operator, objects, core_v1, custom_api, pools_cleaned):
    ns = objects.ns
    objects.create(kwok_pool("rb", 1, startTask={"commandLine": "/bin/sh -c 'echo prepared'"}))
    [c] = wait_idle_nodes(objects, "rb", 1)
    cnode = c["metadata"]["name"]
    boots = succeeded_boots(core_v1, ns, cnode)
    assert boots == {"0"}

    # reboot while a task runs there: the task is requeued and runs again once the node is back
    objects.create(job("j", "rb"))
    objects.create(task("t", "j", annotations=sim(60)))
    wait_task(objects, "t", running, "running")
    objects.patch("Task", "t", {"metadata": {"annotations": sim(1)}})
    log = StateLog(custom_api, ns, cnode)
    reboot_id = str(uuid.uuid4())
    objects.patch("ComputeNode", cnode, {"spec": {"reboot": {"requestId": reboot_id, "nodeRebootOption": "requeue"}}})
    wait_for("reboot handled", lambda: (objects.status("ComputeNode", cnode).get("handledRequests") or {}).get("reboot") == reboot_id, 30)
    st = wait_task(objects, "t", completed, "completed after the reboot", timeout=60)
    assert exec_info(st)["result"] == "success"
    assert exec_info(st)["requeueCount"] == 1 and exec_info(st)["retryCount"] == 0
    wait_cnode_state(objects, cnode, "idle", timeout=60)
    states = log.stop()
    assert "rebooting" in states, states
    assert states.index("rebooting") < len(states) - 1 - states[::-1].index("idle"), states
    after_reboot = wait_for("a new boot's start task succeeded", lambda: (b := succeeded_boots(core_v1, ns, cnode)) - boots and b, 30)
    info = objects.status("ComputeNode", cnode)["startTaskInfo"]
    assert info["result"] == "success" and info["exitCode"] == 0

    # reimage of an idle node
    log = StateLog(custom_api, ns, cnode)
    reimage_id = str(uuid.uuid4())
    objects.patch("ComputeNode", cnode, {"spec": {"reimage": {"requestId": reimage_id, "nodeReimageOption": "requeue"}}})
    wait_for("reimage handled", lambda: (objects.status("ComputeNode", cnode).get("handledRequests") or {}).get("reimage") == reimage_id, 30)
    wait_for("another boot's start task succeeded", lambda: succeeded_boots(core_v1, ns, cnode) - after_reboot, 60)
    wait_cnode_state(objects, cnode, "idle", timeout=60)
    states = log.stop()
    assert "reimaging" in states, states
    # repeating the same request does nothing more
    objects.patch("ComputeNode", cnode, {"spec": {"reimage": {"requestId": reimage_id, "nodeReimageOption": "requeue"}}})
    time.sleep(3)
    assert cnode_state(objects, cnode) == "idle"
    assert len(succeeded_boots(core_v1, ns, cnode)) == 1


# ------------------------------------------------------------------ the real node
def static_pool(name: str, **spec) -> dict:
    return {"kind": "Pool", "metadata": {"name": name},
            "spec": {"nodeGroup": {"provider": "static", "static": {"nodeSelector": {"kubernetes.io/hostname": REAL_NODE}}},
                     "targetDedicatedNodes": 1, **spec}}


def real_node_owner(core_v1) -> str | None:
    """The pool label on the real node, or 'taint:<value>' while only our taint is left."""
    node = core_v1.read_node(REAL_NODE)
    label = (node.metadata.labels or {}).get(POOL_LABEL)
    if label:
        return label
    taints = [t for t in node.spec.taints or [] if t.key == POOL_LABEL]
    return f"taint:{taints[0].value}" if taints else None


@pytest.fixture()
def real_node(operator, objects, core_v1):
    """The real node for this test alone: waits until no pool holds it, and always gives it back."""
    wait_for("the real node to belong to no pool", lambda: real_node_owner(core_v1) is None, timeout=300, interval=2)
    try:
        yield REAL_NODE
    finally:
        for p in objects.list("Pool"):
            objects.delete("Pool", p["metadata"]["name"])
        wait_for("the real node released", lambda: real_node_owner(core_v1) is None, timeout=120)
        wait_for("the test's pools deleted", lambda: not objects.list("Pool"), timeout=60)
        # podbatch does not wipe a released node's directories yet; leave the machine clean
        shutil.rmtree(os.path.join(NODE_ROOT, objects.ns), ignore_errors=True)


def node_dir(ns: str, pool: str, *parts: str) -> str:
    return os.path.join(NODE_ROOT, ns, pool, *parts)


MARKER_START = ('/bin/sh -c "echo started > $AZ_BATCH_NODE_STARTUP_DIR/marker && '
                'cp $AZ_BATCH_NODE_STARTUP_DIR/marker $AZ_BATCH_NODE_SHARED_DIR/marker"')


@pytest.mark.e2e
def test_static_pool_adopts_the_real_node_and_its_start_task_writes_files(objects, core_v1, real_node):
    if not ON_THIS_MACHINE:
        pytest.skip("checks the node directories on disk: needs the local cluster's node")
    ns = objects.ns
    objects.create(static_pool("real", startTask={"commandLine": MARKER_START}))
    [c] = wait_idle_nodes(objects, "real", 1, timeout=120)
    assert c["spec"]["nodeName"] == REAL_NODE
    assert c["status"]["startTaskInfo"]["exitCode"] == 0 and c["status"]["startTaskInfo"]["result"] == "success"
    node = core_v1.read_node(REAL_NODE)
    assert node.metadata.labels[POOL_LABEL] == f"{ns}.real"
    assert any(t.key == POOL_LABEL and t.effect == "NoSchedule" for t in node.spec.taints or [])
    pool = wait_for("pool steady", lambda: (s := objects.status("Pool", "real")).get("allocationState") == "steady"
                    and (s.get("nodeCounts") or {}).get("idle") == 1 and s, 30)
    assert pool["currentDedicatedNodes"] == 1 and not pool.get("resizeErrors")

    # the start task really ran on the node, in startup/
    for sub in ("startup", "shared"):
        with open(node_dir(ns, "real", sub, "marker")) as f:
            assert f.read().strip() == "started"
    assert os.path.isdir(node_dir(ns, "real", "workitems"))

    # a later task on the node reads it from the shared dir
    objects.create(job("j", "real"))
    objects.create(task("reader", "j", command='/bin/sh -c "cat $AZ_BATCH_NODE_SHARED_DIR/marker"'))
    st = wait_task(objects, "reader", completed, "completed", timeout=120)
    assert exec_info(st)["result"] == "success" and exec_info(st)["exitCode"] == 0, st
    assert st["nodeInfo"]["nodeName"] == REAL_NODE
    task_dir = st["nodeInfo"]["taskRootDirectory"]
    assert task_dir.startswith(node_dir(ns, "real", "workitems"))
    with open(os.path.join(task_dir, "stdout.txt")) as f:
        assert "started" in f.read()

    # deleting the pool gives the node back
    objects.delete("Pool", "real")
    wait_for("the real node released", lambda: real_node_owner(core_v1) is None, timeout=90)
    wait_for("the ComputeNode deleted", lambda: cnode_of(objects, "real") is None, timeout=60)
    node = core_v1.read_node(REAL_NODE)
    assert POOL_LABEL not in (node.metadata.labels or {})
    assert not any(t.key == POOL_LABEL for t in node.spec.taints or [])


@pytest.mark.e2e
def test_failing_start_task_leaves_node_starttaskfailed(objects, core_v1, real_node):
    objects.create(static_pool("bad", startTask={"commandLine": '/bin/sh -c "echo no-luck >&2; exit 3"'}))
    c = wait_for("the pool's ComputeNode", lambda: cnode_of(objects, "bad"), timeout=60)
    st = wait_cnode_state(objects, c["metadata"]["name"], "starttaskfailed", timeout=120)
    info = st["startTaskInfo"]
    assert info["exitCode"] == 3 and info["result"] == "failure", info
    assert info["failureInfo"]["code"] == "FailureExitCode"
    assert "no-luck" in (info.get("stderrTail") or ""), info
    pool = wait_for("the pool counts it", lambda: (s := objects.status("Pool", "bad")).get("nodeCounts", {}).get("startTaskFailed") == 1 and s, 30)
    ready = {c["type"]: c["status"] for c in pool["conditions"]}["Ready"]
    assert ready == "False"


@pytest.mark.e2e
def test_reimage_of_the_real_node_empties_its_directories(objects, core_v1, real_node):
    if not ON_THIS_MACHINE:
        pytest.skip("checks the node directories on disk: needs the local cluster's node")
    ns = objects.ns
    objects.create(static_pool("wipe", startTask={"commandLine": MARKER_START}))
    [c] = wait_idle_nodes(objects, "wipe", 1, timeout=120)
    cnode = c["metadata"]["name"]
    first_marker = os.stat(node_dir(ns, "wipe", "startup", "marker")).st_mtime_ns

    objects.create(job("j", "wipe"))
    objects.create(task("writer", "j", command='/bin/sh -c "echo data > $AZ_BATCH_NODE_SHARED_DIR/from-task"'))
    st = wait_task(objects, "writer", completed, "completed", timeout=120)
    assert exec_info(st)["result"] == "success", st
    left_by_task = node_dir(ns, "wipe", "shared", "from-task")
    assert os.path.exists(left_by_task)
    assert os.listdir(node_dir(ns, "wipe", "workitems"))

    reimage_id = str(uuid.uuid4())
    objects.patch("ComputeNode", cnode, {"spec": {"reimage": {"requestId": reimage_id, "nodeReimageOption": "requeue"}}})
    wait_for("reimage handled", lambda: (objects.status("ComputeNode", cnode).get("handledRequests") or {}).get("reimage") == reimage_id, 30)
    wait_for("the start task of the new boot succeeded", lambda: succeeded_boots(core_v1, ns, cnode) - {"0"}, 120)
    wait_cnode_state(objects, cnode, "idle", timeout=60)

    assert not os.path.exists(left_by_task), \
        "reimage left a task's file in shared/ (does the node-preparation script's wipe work with the image's busybox?)"
    assert os.listdir(node_dir(ns, "wipe", "workitems")) == []
    assert sorted(os.listdir(node_dir(ns, "wipe", "shared"))) == ["marker"]   # written again by the start task
    assert os.stat(node_dir(ns, "wipe", "startup", "marker")).st_mtime_ns != first_marker

    # a reboot afterwards runs the start task again but keeps the node's files
    kept = node_dir(ns, "wipe", "shared", "kept")
    with open(kept, "w") as f:
        f.write("keep me")
    boots = succeeded_boots(core_v1, ns, cnode)
    reboot_id = str(uuid.uuid4())
    objects.patch("ComputeNode", cnode, {"spec": {"reboot": {"requestId": reboot_id, "nodeRebootOption": "requeue"}}})
    wait_for("reboot handled", lambda: (objects.status("ComputeNode", cnode).get("handledRequests") or {}).get("reboot") == reboot_id, 30)
    wait_for("the start task of the reboot succeeded", lambda: succeeded_boots(core_v1, ns, cnode) - boots, 120)
    wait_cnode_state(objects, cnode, "idle", timeout=60)
    assert os.path.exists(kept), "a reboot (after a reimage) wiped the node's directories"


@pytest.mark.e2e
def test_removing_a_node_lowers_the_effective_target_once_and_leaves_the_spec_alone(operator, objects, pools_cleaned):
    """As in Batch the pool does not grow the removed node back; unlike a spec patch, a GitOps
    repo that owns spec.targetDedicatedNodes sees no drift. Setting the target again counts."""
    objects.create(kwok_pool("rm", 3))
    nodes = wait_idle_nodes(objects, "rm", 3)
    victim = nodes[0]["metadata"]["name"]
    objects.patch("ComputeNode", victim, {"spec": {"remove": {"requestId": "req-1", "nodeDeallocationOption": "requeue"}}})
    wait_for("the pool down to 2 nodes", lambda: len([c for c in objects.list("ComputeNode")
                                                      if c["spec"]["poolName"] == "rm"]) == 2
             and objects.status("Pool", "rm").get("currentDedicatedNodes") == 2, 90)
    pool = objects.get("Pool", "rm")
    assert pool["spec"]["targetDedicatedNodes"] == 3, "node removal must not rewrite the spec"
    assert "req-1" in pool["metadata"]["annotations"]["podbatch.io/removed-nodes"]
    time.sleep(5)   # several passes: it does not come back, and the removal is not counted twice
    assert objects.status("Pool", "rm").get("currentDedicatedNodes") == 2
    # the owner of the spec sets the target again (a new generation): it counts as given
    objects.patch("Pool", "rm", {"spec": {"targetDedicatedNodes": 4}})
    wait_idle_nodes(objects, "rm", 4)
