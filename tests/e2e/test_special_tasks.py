"""Special tasks (issue 6): job manager, preparation and release tasks, multi-instance gangs."""
from __future__ import annotations

from pathlib import Path

import pytest

from kit import job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e


def test_job_manager_preempts_a_lower_priority_job_and_ends_the_job(operator, objects):
    objects.create(kwok_pool("p", 1, slots=1))
    objects.create(job("low", "p", priority=0))
    objects.create(task("hog", "low", annotations=sim(300)))
    wait_for("hog running", lambda: objects.status("Task", "hog").get("state") == "running")
    objects.create(job("boss", "p", priority=100, jobManagerTask={"id": "manager", "commandLine": "/bin/true"}))
    st = objects.wait_job_done("boss", 120)
    assert st["executionInfo"]["terminateReason"] == "JMComplete"
    jm = objects.status("Task", "boss-manager")
    assert jm["state"] == "completed" and jm["executionInfo"]["result"] == "success"
    hog = objects.status("Task", "hog")["executionInfo"]
    assert hog["requeueCount"] == 1 and hog["retryCount"] == 0
    wait_for("hog running again", lambda: objects.status("Task", "hog").get("state") == "running", 60)


def test_job_manager_never_preempts_equal_priority(operator, objects):
    objects.create(kwok_pool("p", 1, slots=1))
    objects.create(job("first", "p", priority=5))
    objects.create(task("hog", "first", annotations=sim(300)))
    wait_for("hog running", lambda: objects.status("Task", "hog").get("state") == "running")
    objects.create(job("peer", "p", priority=5, jobManagerTask={"commandLine": "/bin/true"}))
    reason = wait_for("job manager waiting", lambda: (objects.status("Task", "peer-jobmanager").get("pendingReason") or {}).get("reason"), 60)
    assert objects.status("Task", "hog")["state"] == "running"
    assert objects.status("Task", "peer-jobmanager")["state"] == "active", reason


JM_SCRIPT = r'''
T=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)
U=https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/apis/podbatch.io/v1alpha1/namespaces/$AZ_BATCH_ACCOUNT_NAME/tasks
for i in 1 2 3 4 5 6 7 8 9 10; do
  wget -q -O /dev/null --no-check-certificate --header "Authorization: Bearer $T" --header "Content-Type: application/json" \
    --post-data "{\"apiVersion\":\"podbatch.io/v1alpha1\",\"kind\":\"Task\",\"metadata\":{\"name\":\"$AZ_BATCH_JOB_ID-w$i\"},\"spec\":{\"jobName\":\"$AZ_BATCH_JOB_ID\",\"id\":\"w$i\",\"commandLine\":\"/bin/true\"}}" "$U" || exit 9
done
echo created 10 tasks
sleep 5
'''


def test_job_manager_creates_tasks_from_inside_its_pod(real_pool, objects):
    objects.create(job("jm", real_pool, jobManagerTask={
        "commandLine": f"/bin/sh -c '{JM_SCRIPT}'", "runExclusive": False,
        "authenticationTokenSettings": {"access": ["job"]}}))
    st = objects.wait_job_done("jm", 180)
    jm = objects.status("Task", "jm-jobmanager")
    assert jm["executionInfo"]["exitCode"] == 0, jm
    assert st["executionInfo"]["terminateReason"] == "JMComplete"
    workers = [t for t in objects.list("Task") if t["metadata"]["name"].startswith("jm-w")]
    assert len(workers) == 10 and all(t["spec"]["jobName"] == "jm" for t in workers)


def test_preparation_once_per_node_before_tasks_and_release_at_the_end(real_pool, objects, namespace):
    log = Path(f"/var/lib/podbatch/{namespace}/{real_pool}/shared/prep.log")
    objects.create(job("pj", real_pool, onAllTasksComplete="terminatejob",
                       jobPreparationTask={"commandLine": "/bin/sh -c 'echo prep >> $AZ_BATCH_NODE_SHARED_DIR/prep.log'"},
                       jobReleaseTask={"commandLine": "/bin/sh -c 'echo release >> $AZ_BATCH_NODE_SHARED_DIR/prep.log'"}))
    for i in range(3):
        objects.create(task(f"pj-{i}", "pj", "/bin/sh -c 'cat $AZ_BATCH_NODE_SHARED_DIR/prep.log && test -n \"$AZ_BATCH_JOB_PREP_DIR\"'"))
    st = objects.wait_job_done("pj", 180)
    assert st["taskCounts"]["succeeded"] == 3, st
    assert [r["result"] for r in st["preparationTasks"]] == ["success"]
    assert [r["result"] for r in st["releaseTasks"]] == ["success"]
    if real_pool and log.parent.parent.exists():
        assert log.read_text() == "prep\nrelease\n"


def test_multi_instance_gang_on_distinct_nodes_never_half_started(operator, objects, core_v1, namespace):
    objects.create(kwok_pool("mpi", 4, enableInterNodeCommunication=True))
    wait_for("4 idle nodes", lambda: sum(1 for c in objects.list("ComputeNode") if (c.get("status") or {}).get("state") == "idle") == 4)
    objects.create(job("mj", "mpi", onAllTasksComplete="terminatejob"))
    for name in ("g1", "g2"):
        objects.create(task(name, "mj", annotations=sim(3), multiInstanceSettings={
            "numberOfInstances": 3, "coordinationCommandLine": "/bin/true"}))
    objects.wait_job_done("mj", 180)
    spans = []
    for name in ("g1", "g2"):
        st = objects.status("Task", name)
        assert st["executionInfo"]["result"] == "success"
        subs = st["subtasks"]
        assert len({s["nodeName"] for s in subs}) == 3, subs
        pod = core_v1.read_namespaced_pod(st["podName"], namespace)
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert len(env["AZ_BATCH_HOST_LIST"].split(",")) == 3 and env["AZ_BATCH_IS_CURRENT_NODE_MASTER"] == "true"
        spans.append((st["executionInfo"]["startTime"], st["executionInfo"]["endTime"]))
    spans.sort()
    assert spans[0][1] <= spans[1][0], f"two 3-node gangs on 4 nodes overlapped: {spans}"
