"""Nothing accepted and ignored (issue 14), on the cluster with simulated kwok nodes: a task
runs on its affinity node, a job without allowTaskPreemption keeps its task when a
higher-priority job manager comes, and a second Task with a taken id or a named user is
refused with a condition and an Event, and never runs."""
from __future__ import annotations

import pytest

from kit import job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e


def _condition(objects, name: str, ctype: str = "Valid"):
    return next((c for c in objects.status("Task", name).get("conditions") or [] if c["type"] == ctype), None)


def _idle_nodes(objects, count: int) -> list[str]:
    def idle():
        names = sorted(c["metadata"]["name"] for c in objects.list("ComputeNode")
                       if (c.get("status") or {}).get("state") == "idle")
        return names if len(names) == count else None
    return wait_for(f"{count} idle nodes", idle, 120)


def test_a_task_runs_on_its_affinity_node_when_it_has_room(operator, objects):
    objects.create(kwok_pool("p", 3, slots=1))
    objects.create(job("j", "p"))
    last = _idle_nodes(objects, 3)[-1]   # spread would take the first of three empty nodes
    objects.create(task("near", "j", annotations=sim(60), affinityInfo={"affinityId": last}))
    info = wait_for("near bound", lambda: objects.status("Task", "near").get("nodeInfo"), 60)
    assert info["nodeId"] == last and info["affinityId"] == last, info
    # its node is now full: a second task preferring it runs elsewhere without waiting
    objects.create(task("also", "j", annotations=sim(0), affinityInfo={"affinityId": last}))
    st = objects.wait_state("Task", "also", "completed", 60)
    assert st["nodeInfo"]["nodeId"] != last and st["executionInfo"]["result"] == "success", st


def test_a_job_without_allow_task_preemption_keeps_its_task_when_a_job_manager_comes(operator, objects):
    objects.create(kwok_pool("p", 1, slots=1))
    objects.create(job("low", "p", priority=0))   # allowTaskPreemption defaults to false, as in Batch
    objects.create(task("hog", "low", annotations=sim(300)))
    wait_for("hog running", lambda: objects.status("Task", "hog").get("state") == "running", 60)
    objects.create(job("boss", "p", priority=100, jobManagerTask={"id": "manager", "commandLine": "/bin/true"}))
    pending = wait_for("the job manager's pending reason",
                       lambda: objects.status("Task", "boss-manager").get("pendingReason"), 60)
    assert pending["reason"] == "AllSlotsBusy" and "allowTaskPreemption" in pending["message"], pending
    hog = objects.status("Task", "hog")
    assert hog["state"] == "running" and hog["attempt"] == 1 and hog["executionInfo"]["requeueCount"] == 0, hog
    # allowing it is read at once: the next pass requeues hog for the job manager
    objects.patch("Job", "low", {"spec": {"allowTaskPreemption": True}})
    objects.wait_state("Task", "boss-manager", "completed", 90)
    assert objects.status("Task", "hog")["executionInfo"]["requeueCount"] == 1


def test_a_second_task_with_a_taken_id_is_refused_and_never_runs(operator, objects, core_v1, namespace):
    objects.create(kwok_pool("p", 1, slots=2))
    objects.create(job("j", "p"))
    objects.create(task("first", "j", annotations=sim(20), id="render"))
    wait_for("first running", lambda: objects.status("Task", "first").get("state") == "running", 60)
    objects.create(task("second", "j", annotations=sim(0), id="render"))
    cond = wait_for("second's Valid condition", lambda: _condition(objects, "second"), 60)
    assert cond["status"] == "False" and cond["reason"] == "InvalidSpec", cond
    assert cond["message"] == ("task id render is already used by Task first in job j; "
                               "delete this Task and create it again with another spec.id"), cond
    events = wait_for("an InvalidSpec event", lambda: [e for e in core_v1.list_namespaced_event(namespace).items
                                                       if e.reason == "InvalidSpec" and e.involved_object.name == "second"])
    assert "already used by Task first" in events[0].message
    objects.wait_state("Task", "first", "completed", 90)
    st = objects.status("Task", "second")
    assert st["state"] == "active" and not st.get("podName") and not st.get("nodeInfo"), st   # a free slot all along
    pods = core_v1.list_namespaced_pod(namespace, label_selector="podbatch.io/role=task").items
    assert [p.metadata.annotations.get("podbatch.io/task-name") for p in pods] == ["first"]


def test_a_named_user_is_refused(operator, objects):
    from kubernetes.client.rest import ApiException
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p"))
    try:
        objects.create(task("named", "j", annotations=sim(0), userIdentity={"userName": "batchuser"}))
    except ApiException as e:   # a server that evaluates the CRD's CEL rules refuses it at once
        assert e.status == 422 and "no named user accounts" in e.body, e.body
        return
    # an older server (the local 1.20 one) takes it; the operator refuses it
    cond = wait_for("named's Valid condition", lambda: _condition(objects, "named"), 60)
    assert cond["status"] == "False" and "no named user accounts" in cond["message"] and "autoUser" in cond["message"]
    assert objects.status("Task", "named").get("state") == "active"
