"""Special tasks (issue 6): job manager, preparation and release tasks, multi-instance gangs."""
from __future__ import annotations

from pathlib import Path

import pytest

from kit import job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e


def test_job_manager_preempts_a_lower_priority_job_and_ends_the_job(operator, objects):
    objects.create(kwok_pool("p", 1, slots=1))
    objects.create(job("low", "p", priority=0, allowTaskPreemption=True))
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
        hosts = pod.metadata.annotations["podbatch.io/host-list"].split(",")
        assert len(set(hosts)) == 3 and hosts == [s["ipAddress"] for s in subs], (hosts, subs)
        assert hosts[0] == pod.status.pod_ip and env["AZ_BATCH_IS_CURRENT_NODE_MASTER"] == "true"
        spans.append((st["executionInfo"]["startTime"], st["executionInfo"]["endTime"]))
    spans.sort()
    assert spans[0][1] <= spans[1][0], f"two 3-node gangs on 4 nodes overlapped: {spans}"


REAL_NODE_LABEL = "local.podbatch.io/real-node"
MPI_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mpi-real-nodes"


@pytest.fixture()
def two_real_nodes(operator, core_v1):
    """The cluster's real nodes (hack/cluster-up.sh starts two), once no pool holds them."""
    names = [n.metadata.name for n in core_v1.list_node(label_selector=f"{REAL_NODE_LABEL}=true").items]
    if len(names) < 2:
        pytest.skip(f"needs two real nodes labelled {REAL_NODE_LABEL}=true (the local cluster has them "
                    f"unless PODBATCH_REAL_NODES=1); this cluster has {len(names)}")
    wait_for("the real nodes to belong to no pool", lambda: all(
        "podbatch.io/pool" not in (core_v1.read_node(n).metadata.labels or {}) for n in names), 300, interval=2)
    yield names
    wait_for("the real nodes released", lambda: all(
        "podbatch.io/pool" not in (core_v1.read_node(n).metadata.labels or {}) for n in names), 120)


def test_multi_instance_on_real_nodes_reach_each_other_at_the_host_list(two_real_nodes, objects, core_v1, namespace):
    """examples/mpi-real-nodes as it is: each instance serves its own address; the primary
    asks every address of AZ_BATCH_HOST_LIST over the pod network."""
    import yaml
    docs = [d for f in ("pool.yaml", "job.yaml", "task.yaml") for d in yaml.safe_load_all((MPI_EXAMPLE / f).read_text()) if d]
    try:
        for d in docs:
            if d["kind"] == "ConfigMap":
                core_v1.create_namespaced_config_map(namespace, d)
            else:
                objects.create(d)
        st = objects.wait_job_done("mpi-real", 300)
        assert st["taskCounts"]["succeeded"] == 1, st
        ts = objects.status("Task", "mpi-ping")
        subs = ts["subtasks"]
        assert len({s["nodeName"] for s in subs}) == 2, subs
        assert {(objects.get("ComputeNode", s["nodeName"])["spec"]["nodeName"]) for s in subs} == set(two_real_nodes)
        log = core_v1.read_namespaced_pod_log(ts["podName"], namespace, container="task")
        ips = [s["ipAddress"] for s in subs]
        for ip in ips:
            assert f"{ip} answered: {ip}" in log, log
        assert f"all {';'.join(ips)} reached" in log, log
        assert all(s["state"] == "completed" for s in subs), subs
        assert "serving" in log, "the primary ran serve.sh, a common resource file"
        # the other instance ran it too: it answered with its own address, checked above

        # an instance whose common resource file cannot be had fails the whole task
        # with a preprocessing error, and no instance is left running
        bad = yaml.safe_load((MPI_EXAMPLE / "task.yaml").read_text().split("---")[1])
        bad["metadata"]["name"] = "mpi-nofile"
        bad["spec"]["jobName"] = "mpi-bad"
        bad["spec"]["multiInstanceSettings"]["commonResourceFiles"][0]["configMapKeyRef"]["key"] = "no-such-key"
        objects.create(job("mpi-bad", "mpi-real", onAllTasksComplete="terminatejob"))
        objects.create(bad)
        objects.wait_job_done("mpi-bad", 120)
        info = objects.status("Task", "mpi-nofile")["executionInfo"]
        assert info["result"] == "failure" and info["failureInfo"]["category"] == "usererror", info
        assert "mpi-serve/no-such-key" in info["failureInfo"]["message"], info
        wait_for("no instance pod left running", lambda: not [
            p for p in core_v1.list_namespaced_pod(namespace).items
            if p.metadata.name.startswith("mpi-nofile") and p.status.phase in ("Pending", "Running")
            and not p.metadata.deletion_timestamp], 60)

        # a non-primary instance whose coordination command fails fails the task at once
        # (Batch: an instance failing fails the multi-instance task), the primary is stopped
        objects.create(job("mpi-fail", "mpi-real", onAllTasksComplete="terminatejob"))
        objects.create(task("mpi-crash", "mpi-fail", "/bin/sleep 300", multiInstanceSettings={
            "numberOfInstances": 2,
            "coordinationCommandLine": "/bin/sh -c '[ \"$AZ_BATCH_IS_CURRENT_NODE_MASTER\" = true ] || exit 7'"}))
        objects.wait_job_done("mpi-fail", 120)
        info = objects.status("Task", "mpi-crash")["executionInfo"]
        assert info["result"] == "failure" and info["exitCode"] == 7, info
        wait_for("no instance of mpi-crash left running", lambda: not [
            p for p in core_v1.list_namespaced_pod(namespace).items
            if p.metadata.name.startswith("mpi-crash") and p.status.phase in ("Pending", "Running")
            and not p.metadata.deletion_timestamp], 60)
    finally:
        objects.delete("Pool", "mpi-real")


def test_a_job_applied_again_under_its_name_runs_its_own_preparation(operator, objects, core_v1, namespace):
    """Pods of an earlier Job of the same name are not the new job's (they carry its uid)."""
    objects.create(kwok_pool("p", 1))
    spec = {"onAllTasksComplete": "terminatejob", "jobPreparationTask": {"commandLine": "/bin/true"}}
    objects.create(job("again", "p", **spec))
    objects.create(task("a1", "again", annotations=sim(0)))
    objects.wait_job_done("again", 120)
    objects.delete("Task", "a1")
    from kubernetes import client   # orphan its pods: they stay, under the names the new job's will have
    objects.api.delete_namespaced_custom_object("podbatch.io", "v1alpha1", namespace, "jobs", "again",
                                                body=client.V1DeleteOptions(propagation_policy="Orphan"))
    wait_for("the old job gone", lambda: "again" not in {j["metadata"]["name"] for j in objects.list("Job")}, 60)
    new_uid = objects.create(job("again", "p", **spec))["metadata"]["uid"]
    objects.create(task("a2", "again", annotations=sim(0)))
    st = objects.wait_job_done("again", 180)
    assert st["taskCounts"]["succeeded"] == 1 and [r["result"] for r in st["preparationTasks"]] == ["success"], st
    preps = core_v1.list_namespaced_pod(namespace, label_selector="podbatch.io/role=jobprep").items
    assert any(p.metadata.labels.get("podbatch.io/task-uid") == new_uid for p in preps), \
        [(p.metadata.name, p.metadata.labels.get("podbatch.io/task-uid")) for p in preps]


def test_a_task_applied_again_under_its_name_runs_again(operator, objects, core_v1, namespace):
    """GitOps re-creates a Task under the same name: its old pod (orphaned here, so it stays
    under the very name the new attempt's pod gets) is not the new task's result."""
    from kubernetes import client
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p"))
    objects.create(task("t", "j", annotations=sim(0, exit_code=0)))
    objects.wait_state("Task", "t", "completed", 120)
    objects.api.delete_namespaced_custom_object("podbatch.io", "v1alpha1", namespace, "tasks", "t",
                                                body=client.V1DeleteOptions(propagation_policy="Orphan"))
    wait_for("the old task gone", lambda: not objects.status("Task", "t"), 60)
    uid = objects.create(task("t", "j", annotations=sim(0, exit_code=3)))["metadata"]["uid"]
    st = objects.wait_state("Task", "t", "completed", 120)
    assert st["executionInfo"]["exitCode"] == 3, st
    pod = core_v1.read_namespaced_pod(st["podName"], namespace)
    assert pod.metadata.labels["podbatch.io/task-uid"] == uid


def test_a_preparation_not_rerun_after_a_reboot_is_rerun_after_a_reimage(operator, objects, core_v1, namespace):
    """rerunOnNodeRebootAfterSuccess false: a reboot keeps the preparation's success, a reimage
    (which wipes the node's directories) runs it again, as in Batch."""
    import uuid
    objects.create(kwok_pool("pr", 1))
    wait_for("the node idle", lambda: any((c.get("status") or {}).get("state") == "idle" for c in objects.list("ComputeNode")), 120)
    cnode = objects.list("ComputeNode")[0]["metadata"]["name"]
    objects.create(job("once", "pr", jobPreparationTask={"commandLine": "/bin/true", "rerunOnNodeRebootAfterSuccess": False}))

    def preps() -> int:
        return len(core_v1.list_namespaced_pod(namespace, label_selector="podbatch.io/role=jobprep").items)

    def run_task(name: str) -> None:
        objects.create(task(name, "once", annotations=sim(0)))
        objects.wait_state("Task", name, "completed", 120)

    run_task("before")
    assert preps() == 1
    for op, ran in (("reboot", 1), ("reimage", 2)):
        rid = str(uuid.uuid4())
        objects.patch("ComputeNode", cnode, {"spec": {op: {"requestId": rid}}})
        wait_for(f"the {op} handled and the node idle again", lambda: (lambda st: (st.get("handledRequests") or {}).get(op) == rid
                                                                       and st.get("state") == "idle")(
            objects.status("ComputeNode", cnode)), 120)
        run_task(f"after-{op}")
        assert preps() == ran, f"after the {op}: {preps()} preparation pods, expected {ran}"
