"""Jobs and tasks on the local cluster (issue 5): the scheduler, task pods, state
machines, retries, priorities, wall-clock limits, and the job's own state."""
from __future__ import annotations


import pytest
import yaml

from kit import ROOT, job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e


def _task_pods(core_v1, ns: str, task_name: str) -> list:
    return core_v1.list_namespaced_pod(ns, label_selector=f"podbatch.io/task={task_name}").items


def _wait_idle(objects, pool: str, n: int, timeout: float = 120) -> None:
    wait_for(f"{n} idle nodes in pool {pool}",
             lambda: sum(1 for c in objects.list("ComputeNode") if c["spec"]["poolName"] == pool
                         and (c.get("status") or {}).get("state") == "idle") == n, timeout)


def test_quickstart_example_completes(operator, objects, custom_api):
    for path in sorted((ROOT / "examples/quickstart").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects.create(doc)
    st = objects.wait_job_done("quickstart", timeout=240)
    assert st["taskCounts"] == {"active": 0, "running": 0, "completed": 20, "succeeded": 20, "failed": 0}
    assert st["executionInfo"]["terminateReason"] == "AllTasksComplete"
    t = objects.status("Task", "quickstart-7")
    assert t["executionInfo"]["result"] == "success" and t["executionInfo"]["exitCode"] == 0
    assert t["nodeInfo"]["poolId"] == "quickstart"


def test_priority_higher_job_runs_first_and_equal_priorities_interleave(operator, objects):
    objects.create(kwok_pool("p", 0, slots=1))
    for name, prio in (("low", 10), ("high", 500)):
        objects.create(job(name, "p", priority=prio, onAllTasksComplete="terminatejob"))
        for i in range(3):
            objects.create(task(f"{name}-{i}", name, annotations=sim(1.3)))
    wait_for("tasks queued with a reason", lambda: (objects.status("Task", "low-0").get("pendingReason") or {}).get("reason"))
    objects.patch("Pool", "p", {"spec": {"targetDedicatedNodes": 1}})
    objects.wait_job_done("high", 120)
    objects.wait_job_done("low", 120)
    starts = sorted((objects.status("Task", f"{n}-{i}")["executionInfo"]["startTime"], n) for n in ("low", "high") for i in range(3))
    assert [n for _, n in starts[:3]] == ["high"] * 3, starts

    objects.create(kwok_pool("q", 0, slots=1))
    for name in ("a", "b"):
        objects.create(job(name, "q", onAllTasksComplete="terminatejob"))
        for i in range(3):
            objects.create(task(f"{name}-{i}", name, annotations=sim(1.3)))
    wait_for("tasks queued", lambda: (objects.status("Task", "b-2").get("pendingReason") or {}).get("reason"))
    objects.patch("Pool", "q", {"spec": {"targetDedicatedNodes": 1}})
    objects.wait_job_done("a", 120)
    objects.wait_job_done("b", 120)
    order = [n for _, n in sorted((objects.status("Task", f"{n}-{i}")["executionInfo"]["startTime"] + f"{i}", n)
                                  for n in ("a", "b") for i in range(3))]
    # round-robin: neither job takes two turns while the other waits
    assert order.count("a") == 3 and all(order[i] != order[i + 1] for i in range(len(order) - 1)), order


@pytest.mark.parametrize("fill,distinct", [("spread", 2), ("pack", 1)])
def test_node_fill_type(operator, objects, fill, distinct):
    objects.create(kwok_pool("p", 2, slots=4, taskSchedulingPolicy={"nodeFillType": fill}))
    _wait_idle(objects, "p", 2)
    objects.create(job("j", "p"))
    for i in range(2):
        objects.create(task(f"t{i}", "j", annotations=sim(20)))
    nodes = wait_for("both tasks placed", lambda: (lambda ns: ns if all(ns) else None)(
        [(objects.status("Task", f"t{i}").get("nodeInfo") or {}).get("nodeId") for i in range(2)]))
    assert len(set(nodes)) == distinct, nodes


def test_retries_then_failure(operator, objects, core_v1, namespace):
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p", onAllTasksComplete="terminatejob"))
    objects.create(task("flaky", "j", annotations=sim(0, exit_code=1), constraints={"maxTaskRetryCount": 2}))
    objects.wait_job_done("j", 120)
    st = objects.status("Task", "flaky")
    assert st["state"] == "completed"
    info = st["executionInfo"]
    assert (info["result"], info["exitCode"], info["retryCount"], info.get("requeueCount", 0)) == ("failure", 1, 2, 0)
    assert info["failureInfo"]["category"] == "usererror"
    pods = _task_pods(core_v1, namespace, "flaky")
    assert sorted(p.metadata.name for p in pods) == ["flaky-1", "flaky-2", "flaky-3"]
    assert objects.status("Job", "j")["taskCounts"]["failed"] == 1
    reasons = wait_for("events on the task", lambda: (lambda r: r if {"TaskRetried", "TaskFailed"} <= r else None)(
        {e.reason for e in core_v1.list_namespaced_event(namespace).items if e.involved_object.name == "flaky"}))
    assert "TaskRetried" in reasons


def test_max_wall_clock_time_kills_task(operator, objects):
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p"))
    objects.create(task("sleepy", "j", annotations=sim(120), constraints={"maxWallClockTime": "PT3S"}))
    st = objects.wait_state("Task", "sleepy", "completed", 90)
    assert st["executionInfo"]["result"] == "failure"
    assert st["executionInfo"]["failureInfo"]["code"] == "TaskEnded"
    assert st["executionInfo"]["retryCount"] == 0


def test_missing_pool_is_reported_and_job_runs_once_it_exists(operator, objects):
    objects.create(job("j", "nowhere", onAllTasksComplete="terminatejob"))
    objects.create(task("t", "j", annotations=sim(0)))
    err = wait_for("scheduling error", lambda: (objects.status("Job", "j").get("executionInfo") or {}).get("schedulingError"))
    assert err["code"] == "PoolNotFound" and "nowhere" in err["message"]
    pending = wait_for("pending reason", lambda: objects.status("Task", "t").get("pendingReason"))
    assert pending["reason"] in ("PoolNotFound", "NoNodeReady")
    objects.create(kwok_pool("nowhere", 1))
    objects.wait_job_done("j", 120)
    assert not (objects.status("Job", "j")["executionInfo"].get("schedulingError"))


def test_disable_requeue_and_enable(operator, objects):
    objects.create(kwok_pool("p", 1, slots=2))
    objects.create(job("j", "p", onAllTasksComplete="terminatejob"))
    for i in range(2):
        objects.create(task(f"t{i}", "j", annotations=sim(6)))
    wait_for("running", lambda: objects.status("Task", "t0").get("state") == "running")
    objects.patch("Job", "j", {"spec": {"desiredState": "disabled", "disableTasks": "requeue"}})
    objects.wait_state("Job", "j", "disabled", 60)
    st = objects.status("Task", "t0")
    assert st["state"] == "active" and st["executionInfo"]["requeueCount"] == 1
    assert (st.get("pendingReason") or {}).get("reason") == "JobDisabled" or True  # reason written on the next pass
    wait_for("pending reason JobDisabled", lambda: (objects.status("Task", "t0").get("pendingReason") or {}).get("reason") == "JobDisabled")
    objects.patch("Job", "j", {"spec": {"desiredState": "active"}})
    objects.wait_job_done("j", 120)
    assert objects.status("Job", "j")["taskCounts"]["succeeded"] == 2


def test_terminate_job_ends_running_tasks(operator, objects):
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p"))
    objects.create(task("long", "j", annotations=sim(300)))
    wait_for("running", lambda: objects.status("Task", "long").get("state") == "running")
    objects.patch("Job", "j", {"spec": {"desiredState": "terminated"}})
    st = objects.wait_job_done("j", 60)
    assert st["executionInfo"]["terminateReason"] == "UserTerminate"
    t = objects.status("Task", "long")
    assert t["state"] == "completed" and t["executionInfo"]["failureInfo"]["code"] == "TaskEnded"


def test_exit_condition_terminates_job(operator, objects):
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p", onTaskFailure="performexitoptionsjobaction"))
    objects.create(task("bad", "j", annotations=sim(0, exit_code=7),
                        exitConditions={"exitCodes": [{"code": 7, "exitOptions": {"jobAction": "terminate"}}]}))
    st = objects.wait_job_done("j", 90)
    assert st["executionInfo"]["terminateReason"] == "TaskFailed"


def test_task_dependencies_run_in_order(operator, objects):
    objects.create(kwok_pool("p", 2, slots=2))
    objects.create(job("j", "p", usesTaskDependencies=True, onAllTasksComplete="terminatejob"))
    objects.create(task("d", "j", id="D", annotations=sim(0.2), dependsOn={"taskIdRanges": [{"start": 1, "end": 4}]}))
    objects.create(task("c", "j", id="C", annotations=sim(0.2), dependsOn={"taskIds": ["A", "B"]}))
    objects.create(task("b", "j", id="B", annotations=sim(0.2), dependsOn={"taskIds": ["A"]}))
    objects.create(task("a", "j", id="A", annotations=sim(1)))
    for i in range(1, 5):
        objects.create(task(f"n{i}", "j", id=str(i), annotations=sim(0.2)))
    objects.wait_job_done("j", 120)
    t = {n: objects.status("Task", n)["executionInfo"] for n in ("a", "b", "c", "d", "n1", "n4")}
    assert t["a"]["endTime"] <= t["b"]["startTime"] and t["b"]["endTime"] <= t["c"]["startTime"]
    assert max(t["n1"]["endTime"], t["n4"]["endTime"]) <= t["d"]["startTime"]


def test_failed_dependency_blocks(operator, objects):
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p", usesTaskDependencies=True))
    objects.create(task("a", "j", id="A", annotations=sim(0, exit_code=2)))
    objects.create(task("b", "j", id="B", annotations=sim(0), dependsOn={"taskIds": ["A"]}))
    objects.wait_state("Task", "a", "completed", 60)
    reason = wait_for("b blocked", lambda: (objects.status("Task", "b").get("pendingReason") or {}).get("message"))
    assert "A" in reason and "failed" in reason
    assert objects.status("Task", "b")["state"] == "active"


def test_reactivating_a_failed_dependency_releases_its_dependents(operator, objects):
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p", usesTaskDependencies=True, onAllTasksComplete="terminatejob"))
    objects.create(task("a", "j", id="A", annotations=sim(0, exit_code=2)))
    objects.create(task("b", "j", id="B", annotations=sim(0), dependsOn={"taskIds": ["A"]}))
    objects.wait_state("Task", "a", "completed", 60)
    wait_for("b blocked", lambda: "failed" in ((objects.status("Task", "b").get("pendingReason") or {}).get("message") or ""))
    objects.patch("Task", "a", {"metadata": {"annotations": sim(0, exit_code=0)}, "spec": {"reactivateRequestId": "r1"}})
    st = objects.wait_job_done("j", 90)
    assert st["taskCounts"]["succeeded"] == 2
    a = objects.status("Task", "a")
    assert a["executionInfo"]["result"] == "success" and a["attempt"] == 2 and a["handledReactivateRequestId"] == "r1"


def test_dependency_cycle_is_reported(operator, objects):
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p", usesTaskDependencies=True))
    objects.create(task("x", "j", id="X", dependsOn={"taskIds": ["Y"]}))
    objects.create(task("y", "j", id="Y", dependsOn={"taskIds": ["X"]}))
    reason = wait_for("cycle reported", lambda: (lambda p: p if p.get("reason") == "DependencyCycle" else None)(
        objects.status("Task", "x").get("pendingReason") or {}))
    assert "X" in reason["message"] and "Y" in reason["message"]
    conds = wait_for("job condition", lambda: {c["type"]: c for c in objects.status("Job", "j").get("conditions") or []}.get("DependencyCycle"))
    assert conds["status"] == "True"


def test_required_slots_above_the_node_and_gang_without_inter_node_communication(operator, objects):
    objects.create(kwok_pool("p", 1, slots=2))
    objects.create(job("j", "p"))
    objects.create(task("big", "j", requiredSlots=4))
    objects.create(task("gang", "j", multiInstanceSettings={"numberOfInstances": 2}))
    big = wait_for("big waits", lambda: (objects.status("Task", "big").get("pendingReason") or {}).get("reason"))
    assert big == "RequiredSlotsExceedNode"
    gang = wait_for("gang waits", lambda: objects.status("Task", "gang").get("pendingReason"))
    assert gang["reason"] == "InterNodeCommunicationDisabled" and "enableInterNodeCommunication" in gang["message"]


def test_terminating_a_task(operator, objects):
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p"))
    objects.create(task("t", "j", annotations=sim(300)))
    wait_for("running", lambda: objects.status("Task", "t").get("state") == "running")
    objects.patch("Task", "t", {"spec": {"desiredState": "terminated"}})
    st = objects.wait_state("Task", "t", "completed", 60)
    assert st["executionInfo"]["failureInfo"]["code"] == "TaskEnded"


def test_a_task_with_a_name_longer_than_a_label_completes(operator, objects):
    name = "t-" + "x" * 90
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p", onAllTasksComplete="terminatejob"))
    objects.create(task(name, "j", annotations=sim(0)))
    objects.wait_job_done("j", 90)
    assert objects.status("Task", name)["executionInfo"]["result"] == "success"


def test_pending_reasons_only_for_the_head_of_a_deep_queue(kubeconfig, crds, nodesim, custom_api, core_v1):
    """PODBATCH_PENDING_REASON_LIMIT: a deep queue costs no status write per waiting task."""
    import time
    import uuid

    from kubernetes import client

    from kit import Objects, OperatorProcess
    ns = f"pbdeep-{uuid.uuid4().hex[:6]}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    op = OperatorProcess(kubeconfig, f"operator-{ns}", env={"PODBATCH_NAMESPACES": ns, "PODBATCH_PENDING_REASON_LIMIT": "5"}).start()
    objects = Objects(custom_api, ns)
    try:
        objects.create(kwok_pool("empty", 0))
        objects.create(job("j", "empty"))
        for i in range(12):
            objects.create(task(f"t{i:02d}", "j"))
        wait_for("the first 5 with a reason", lambda: sum(
            bool((t.get("status") or {}).get("pendingReason")) for t in objects.list("Task")) >= 5, 60)
        time.sleep(5)   # several passes: the others stay without one
        reasons = {t["metadata"]["name"]: (t.get("status") or {}).get("pendingReason") for t in objects.list("Task")}
        assert sum(bool(r) for r in reasons.values()) == 5, reasons
        assert all(r["queuePosition"] <= 5 for r in reasons.values() if r)
    finally:
        objects.delete("Pool", "empty")   # its finalizer needs the operator
        wait_for("the pool gone", lambda: not objects.list("Pool"), 60)
        op.stop()
        core_v1.delete_namespace(ns)
