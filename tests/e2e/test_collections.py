"""Task collections (issue 13) on the local cluster: one TaskCollection object runs many
tasks of a job; each task's pod records its binding and attempt; the collection's status
keeps its ends as index ranges, written far less often than once per task; retries and
failures are exact; a Task can depend on a collection's tasks; an operator killed mid-run
loses nothing and runs nothing twice."""
from __future__ import annotations

import threading
import time

import pytest
from kubernetes import watch

from kit import OperatorProcess, job, kwok_pool, task, wait_for
from podbatch import GROUP, VERSION

pytestmark = pytest.mark.e2e


def sweep(name: str, job_name: str, n: int, *, sim: dict | None = None, **spec) -> dict:
    """A sweep of n tasks; `sim`: the node simulator's annotations for every task's pods, with
    {0} substituted (docs/nodesim.md)."""
    return {"kind": "TaskCollection",
            "metadata": {"name": name, "annotations": {f"sim.podbatch.io/{k}": v for k, v in (sim or {}).items()}},
            "spec": {"jobName": job_name, "parametricSweep": {
                "parameterSets": [{"start": 0, "end": n - 1}],
                "repeatTask": {"commandLine": "render --frame {0:4}", "environmentSettings": [{"name": "FRAME", "value": "{0}"}],
                               **spec}}}}


def _watch_status_writes(custom_api, ns: str, name: str, seen: list, stop: threading.Event) -> None:
    w = watch.Watch()
    for ev in w.stream(custom_api.list_namespaced_custom_object, GROUP, VERSION, ns, "taskcollections",
                       field_selector=f"metadata.name={name}", timeout_seconds=240):
        seen.append(dict(ev["object"].get("status") or {}))
        if stop.is_set() or (ev["object"].get("status") or {}).get("state") == "completed":
            w.stop()


def _idle_nodes(objects, n: int) -> None:
    wait_for(f"{n} idle nodes", lambda: sum((c.get("status") or {}).get("state") == "idle"
                                            for c in objects.list("ComputeNode")) >= n, 120)


def _task_pods(core_v1, ns: str, coll: str) -> list:
    return core_v1.list_namespaced_pod(ns, label_selector=f"podbatch.io/collection={coll}").items


def test_a_sweep_runs_every_index_once_and_its_status_is_written_in_batches(operator, objects, custom_api, core_v1, namespace):
    objects.create(kwok_pool("p", 2, slots=4))
    objects.create(job("j", "p", onAllTasksComplete="terminatejob"))
    _idle_nodes(objects, 2)
    seen: list = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_status_writes, args=(custom_api, namespace, "frames", seen, stop), daemon=True)
    watcher.start()
    n = 60
    objects.create(sweep("frames", "j", n, sim={"duration": "0.3"}))
    done = objects.wait_job_done("j", 180)
    assert done["taskCounts"] == {"active": 0, "running": 0, "completed": n, "succeeded": n, "failed": 0}, done
    watcher.join(30)
    stop.set()
    st = objects.status("TaskCollection", "frames")
    assert st["state"] == "completed" and st["size"] == n and st["succeededIndexes"] == f"0-{n - 1}", st
    assert not st.get("failedIndexes") and not st.get("attempts"), st
    # one pod per index, attempt 1, owned by the collection; the parameters substituted
    pods = _task_pods(core_v1, namespace, "frames")
    names = sorted(p.metadata.name for p in pods)
    assert names == sorted(f"frames-{i}-1" for i in range(n)), names
    p7 = next(p for p in pods if p.metadata.name == "frames-7-1")
    assert p7.metadata.owner_references[0].kind == "TaskCollection"
    env = {e.name: e.value for e in p7.spec.containers[0].env or []}
    assert env.get("FRAME") == "7" and env.get("AZ_BATCH_TASK_ID") == "frames-7", env
    assert "render --frame 0007" in " ".join(p7.spec.containers[0].args or p7.spec.containers[0].command or []) \
        or "0007" in str(p7.spec.containers[0]), p7.spec.containers[0]
    # no Task objects: the collection is the one object
    assert objects.list("Task") == []
    # its status was written far less often than once per task
    writes = len(seen) - 1
    assert 0 < writes <= n // 3, f"{writes} status writes for {n} tasks"


def test_retries_and_failures_are_exact_and_a_task_waits_for_a_collections_task(operator, objects, core_v1, namespace):
    objects.create(kwok_pool("p", 1, slots=2))
    objects.create(job("j", "p", onAllTasksComplete="terminatejob", usesTaskDependencies=True))
    _idle_nodes(objects, 1)
    # task 0 exits 0, task 1 exits 1 on each of its 2 attempts; ids are the bare indexes
    body = sweep("s", "j", 2, sim={"exit-code": "{0}", "duration": "1"}, constraints={"maxTaskRetryCount": 1})
    body["spec"]["taskIdPrefix"] = ""
    objects.create(body)
    objects.create({"kind": "TaskCollection", "metadata": {"name": "list"}, "spec": {
        "jobName": "j", "tasks": [{"id": "first", "commandLine": "/bin/true"}, {"commandLine": "/bin/true"}]}})
    objects.create(task("after", "j", dependsOn={"taskIdRanges": [{"start": 0, "end": 0}], "taskIds": ["first"]}))
    wait_for("the collection's ends", lambda: (objects.status("TaskCollection", "s").get("taskCounts") or {}).get("completed") == 2, 120)
    st = objects.status("TaskCollection", "s")
    assert st["succeededIndexes"] == "0" and st["failedIndexes"] == "1", st
    f = st["failedTasks"][0]
    assert f["index"] == 1 and f["id"] == "1" and f["exitCode"] == 1 and f["retryCount"] == 1, f
    assert not st.get("attempts"), st
    pods = sorted(p.metadata.name for p in _task_pods(core_v1, namespace, "s"))
    assert pods == ["s-0-1", "s-1-1", "s-1-2"], pods
    done = objects.wait_job_done("j", 120)
    assert done["taskCounts"]["succeeded"] == 4 and done["taskCounts"]["failed"] == 1, done
    after = objects.status("Task", "after")
    assert after["state"] == "completed" and after["executionInfo"]["result"] == "success", after
    listed = {p.metadata.name: {e.name: e.value for e in p.spec.containers[0].env or []} for p in _task_pods(core_v1, namespace, "list")}
    assert listed["list-0-1"]["AZ_BATCH_TASK_ID"] == "first" and listed["list-1-1"]["AZ_BATCH_TASK_ID"] == "list-1", listed


def test_an_operator_killed_mid_collection_runs_no_index_twice_and_counts_stay_exact(kubeconfig, crds, nodesim, objects,
                                                                                   core_v1, namespace):
    from conftest import NS_PREFIX
    op = OperatorProcess(kubeconfig, f"op-coll-{namespace}", env={"PODBATCH_NAMESPACES": namespace}).start()
    try:
        objects.create(kwok_pool("p", 2, slots=3))
        objects.create(job("j", "p", onAllTasksComplete="terminatejob"))
        _idle_nodes(objects, 2)
        n = 40
        objects.create(sweep("c", "j", n, sim={"duration": "1", "start-delay": "0.5"}))
        wait_for("some tasks done", lambda: 6 <= (objects.status("TaskCollection", "c").get("taskCounts") or {}).get("succeeded", 0), 120)
        op.kill()
        op.start()
        done = objects.wait_job_done("j", 240)
        assert done["taskCounts"] == {"active": 0, "running": 0, "completed": n, "succeeded": n, "failed": 0}, done
        st = objects.status("TaskCollection", "c")
        assert st["succeededIndexes"] == f"0-{n - 1}", st
        pods = sorted(p.metadata.name for p in _task_pods(core_v1, namespace, "c"))
        assert pods == sorted(f"c-{i}-1" for i in range(n)), pods
    finally:
        op.stop()
    assert NS_PREFIX


def test_terminate_and_reactivate_a_collections_tasks(operator, objects, core_v1, namespace):
    objects.create(kwok_pool("p", 1, slots=1))
    objects.create(job("j", "p"))
    _idle_nodes(objects, 1)
    # task i runs 8+i s; on one slot, task 0 runs while 1 and 2 wait
    body = sweep("t", "j", 3, sim={"duration": "{0}"})
    body["spec"]["parametricSweep"]["parameterSets"] = [{"start": 8, "end": 10}]
    objects.create(body)
    wait_for("task 0 running", lambda: any(p.status.phase == "Running" for p in _task_pods(core_v1, namespace, "t")
                                           if p.metadata.name == "t-0-1"), 60)
    objects.patch("TaskCollection", "t", {"spec": {"terminateIndexes": "0,2"}})
    wait_for("the three ends", lambda: (objects.status("TaskCollection", "t").get("taskCounts") or {}).get("completed") == 3, 90)
    st = objects.status("TaskCollection", "t")
    assert st["failedIndexes"] == "0,2" and st["succeededIndexes"] == "1", st
    codes = {f["index"]: f["failureInfo"]["code"] for f in st["failedTasks"]}
    assert codes == {0: "TaskEnded", 2: "TaskEnded"}, st["failedTasks"]
    names = sorted(p.metadata.name for p in _task_pods(core_v1, namespace, "t"))
    assert "t-2-1" not in names, f"a terminated queued task ran: {names}"

    # reactivate: a failed task runs again at its next attempt, its retry count reset;
    # a terminated one is left as it is
    objects.create(sweep("r", "j", 2, sim={"exit-code": "{0}"}))
    wait_for("r's ends", lambda: (objects.status("TaskCollection", "r").get("taskCounts") or {}).get("completed") == 2, 60)
    objects.patch("TaskCollection", "r", {"spec": {"reactivate": {"requestId": "again-1", "indexes": "1"}}})
    objects.patch("TaskCollection", "t", {"spec": {"reactivate": {"requestId": "again-1", "indexes": "0"}}})
    wait_for("r-1-2", lambda: any(p.metadata.name == "r-1-2" for p in _task_pods(core_v1, namespace, "r")), 60)
    st = wait_for("r's reactivated end", lambda: (lambda s: s if s.get("handledReactivateRequestId") == "again-1"
                                                  and (s.get("taskCounts") or {}).get("completed") == 2 else None)(
        objects.status("TaskCollection", "r")), 60)
    f = st["failedTasks"][0]
    assert f["index"] == 1 and f["podName"] == "r-1-2" and f["retryCount"] == 0, st
    tst = wait_for("t's request handled", lambda: (lambda s: s if s.get("handledReactivateRequestId") == "again-1" else None)(
        objects.status("TaskCollection", "t")), 30)
    assert tst["failedIndexes"] == "0,2", tst
    job_counts = objects.status("Job", "j")["taskCounts"]
    assert job_counts["completed"] == 5 and job_counts["failed"] == 3, job_counts


def test_a_bad_collection_is_refused_with_a_reason_and_nothing_runs(operator, objects, core_v1, namespace):
    objects.create(kwok_pool("p", 1, slots=1))
    objects.create(job("j", "p"))
    objects.create(job("k", "p"))
    # the node simulator's annotations may not go in a pod template (podbatch.io keys are podbatch's)
    objects.create({"kind": "TaskCollection", "metadata": {"name": "bad"}, "spec": {"jobName": "j", "parametricSweep": {
        "parameterSets": [{"start": 0, "end": 3}], "repeatTask": {"commandLine": "x {1}"}}}})
    objects.create(sweep("moved", "j", 2, sim={"duration": "3"}))   # one slot: the second waits for the first
    wait_for("moved's first task", lambda: _task_pods(core_v1, namespace, "moved"), 60)
    objects.patch("TaskCollection", "moved", {"spec": {"jobName": "k"}})
    for name, text in (("bad", "repeatTask uses {1} but there are only 1 parameterSets"), ("moved", "spec.jobName cannot change")):
        cond = wait_for(f"{name} stalled", lambda: next((c for c in objects.status("TaskCollection", name).get("conditions") or []
                                                         if c["type"] == "Stalled" and c["status"] == "True"), None), 30)
        assert cond["reason"] == "InvalidSpec" and text in cond["message"], cond
    assert _task_pods(core_v1, namespace, "bad") == []
    events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=moved").items
    assert any(e.reason == "InvalidSpec" for e in events), [e.reason for e in events]
    time.sleep(6)   # the first task has ended: its slot is free
    assert [p.metadata.name for p in _task_pods(core_v1, namespace, "moved")] == ["moved-0-1"], "a stalled collection started a task"
