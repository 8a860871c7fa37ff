"""Tasks on the real node (issue 5): the task's stdout.txt, stderr.txt, working dir and
every AZ_BATCH_* variable, checked from inside the pod, through `kubectl logs`, and on
disk. The local cluster's kubelet is this machine, so the node directories are here."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from kit import job, task, wait_for

pytestmark = pytest.mark.e2e
REAL_NODE = os.environ.get("PODBATCH_REAL_NODE", "localhost")
ON_THIS_MACHINE = REAL_NODE == "localhost"
EXPECTED_VARS = ("AZ_BATCH_ACCOUNT_NAME", "AZ_BATCH_POOL_ID", "AZ_BATCH_NODE_ID", "AZ_BATCH_JOB_ID", "AZ_BATCH_TASK_ID",
                 "AZ_BATCH_NODE_ROOT_DIR", "AZ_BATCH_NODE_SHARED_DIR", "AZ_BATCH_NODE_STARTUP_DIR",
                 "AZ_BATCH_TASK_DIR", "AZ_BATCH_TASK_WORKING_DIR", "AZ_BATCH_NODE_IS_DEDICATED")


def test_task_environment_files_and_logs_on_the_real_node(real_pool, objects, core_v1, namespace):
    objects.create(job("envjob", real_pool, onAllTasksComplete="terminatejob",
                       commonEnvironmentSettings=[{"name": "COMMON", "value": "from-job"}]))
    script = ('env | grep -E "^(AZ_BATCH_|COMMON=|OWN=)" | sort; echo "PWD=$(pwd)"; echo to-stderr >&2; '
              'echo data > result.txt')
    objects.create(task("envtask", "envjob", f"/bin/sh -c '{script}'", id="env-1",
                        environmentSettings=[{"name": "OWN", "value": "from-task"}]))
    st = objects.wait_state("Task", "envtask", "completed", 120)
    assert st["executionInfo"]["result"] == "success", st
    root = f"/var/lib/podbatch/{namespace}/{real_pool}"
    task_dir = f"{root}/workitems/envjob/job-1/env-1"
    assert st["nodeInfo"]["taskRootDirectory"] == task_dir

    logs = core_v1.read_namespaced_pod_log(st["podName"], namespace)
    env = dict(line.split("=", 1) for line in logs.splitlines() if "=" in line)
    for var in EXPECTED_VARS:
        assert env.get(var), f"{var} missing from the task's environment: {sorted(env)}"
    assert env["AZ_BATCH_ACCOUNT_NAME"] == namespace and env["AZ_BATCH_POOL_ID"] == real_pool
    assert env["AZ_BATCH_JOB_ID"] == "envjob" and env["AZ_BATCH_TASK_ID"] == "env-1"
    assert env["AZ_BATCH_TASK_DIR"] == task_dir and env["AZ_BATCH_TASK_WORKING_DIR"] == f"{task_dir}/wd"
    assert env["AZ_BATCH_NODE_SHARED_DIR"] == f"{root}/shared" and env["AZ_BATCH_NODE_IS_DEDICATED"] == "true"
    assert env["PWD"] == f"{task_dir}/wd"
    assert env["COMMON"] == "from-job" and env["OWN"] == "from-task"
    assert "to-stderr" in logs   # stderr reaches kubectl logs too

    if ON_THIS_MACHINE:
        assert Path(task_dir, "stdout.txt").read_text() == logs.replace("to-stderr\n", "")
        assert Path(task_dir, "stderr.txt").read_text() == "to-stderr\n"
        assert Path(task_dir, "wd", "result.txt").read_text() == "data\n"


def test_command_line_is_not_run_by_a_shell(real_pool, objects, core_v1, namespace):
    objects.create(job("argv", real_pool))
    objects.create(task("echo", "argv", "echo '$HOME' \"two words\" ;"))
    st = objects.wait_state("Task", "echo", "completed", 120)
    assert core_v1.read_namespaced_pod_log(st["podName"], namespace).strip() == "$HOME two words ;"


def test_retention_time_removes_the_pod_and_the_task_directory(real_pool, objects, core_v1, namespace):
    objects.create(job("keep", real_pool))
    objects.create(task("brief", "keep", "/bin/sh -c 'echo kept > kept.txt'", constraints={"retentionTime": "PT3S"}))
    st = objects.wait_state("Task", "brief", "completed", 120)
    assert st["executionInfo"]["result"] == "success"
    task_dir = Path(st["nodeInfo"]["taskRootDirectory"])
    expired = wait_for("retention to expire", lambda: next((c for c in objects.status("Task", "brief").get("conditions") or []
                                                            if c["type"] == "Retained" and c["status"] == "False"), None), 90)
    assert expired["reason"] == "RetentionTimeExpired"
    wait_for("the task's pod deleted", lambda: not [p for p in core_v1.list_namespaced_pod(
        namespace, label_selector="podbatch.io/task=brief").items], 60)
    if ON_THIS_MACHINE:
        wait_for("the task directory removed", lambda: not task_dir.exists(), 60)


def test_an_image_without_a_shell_is_reported(real_pool, objects):
    objects.create(job("noshell", real_pool))
    objects.create(task("pause", "noshell", "/pause", containerSettings={"imageName": "k8s.gcr.io/pause:3.2"}))
    st = objects.wait_state("Task", "pause", "completed", 120)
    assert st["executionInfo"]["result"] == "failure"
    assert "/bin/sh" in st["executionInfo"]["failureInfo"]["message"], st["executionInfo"]["failureInfo"]


def test_releasing_the_node_wipes_the_pool_directories(operator, objects, core_v1, namespace):
    from conftest import REAL_NODE as NODE
    wait_for(f"node {NODE} to belong to no pool", lambda: "podbatch.io/pool" not in (
        core_v1.read_node(NODE).metadata.labels or {}), 300, interval=2)
    objects.create({"kind": "Pool", "metadata": {"name": "wiped"}, "spec": {
        "nodeGroup": {"provider": "static", "static": {"nodeSelector": {"kubernetes.io/hostname": NODE}}},
        "targetDedicatedNodes": 1, "startTask": {"commandLine": "/bin/sh -c 'echo x > $AZ_BATCH_NODE_SHARED_DIR/left.txt'"}}})
    root = Path(f"/var/lib/podbatch/{namespace}/wiped")
    try:
        wait_for("the node idle", lambda: any((c.get("status") or {}).get("state") == "idle" for c in objects.list("ComputeNode")), 120)
        if ON_THIS_MACHINE:
            assert (root / "shared" / "left.txt").exists()
    finally:
        objects.delete("Pool", "wiped")
        wait_for("the node released", lambda: "podbatch.io/pool" not in (core_v1.read_node(NODE).metadata.labels or {}), 120)
    if ON_THIS_MACHINE:
        assert not root.exists(), f"{root} was left on the node"


def test_start_task_and_preparation_task_get_their_resource_files(operator, objects, core_v1, namespace):
    from conftest import REAL_NODE as NODE
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "files"}, "data": {"greeting": "hi from a configmap\n"}})
    wait_for(f"node {NODE} to belong to no pool", lambda: "podbatch.io/pool" not in (
        core_v1.read_node(NODE).metadata.labels or {}), 300, interval=2)
    objects.create({"kind": "Pool", "metadata": {"name": "rf"}, "spec": {
        "nodeGroup": {"provider": "static", "static": {"nodeSelector": {"kubernetes.io/hostname": NODE}}},
        "targetDedicatedNodes": 1, "startTask": {
            "commandLine": "/bin/sh -c 'cp greeting.txt $AZ_BATCH_NODE_SHARED_DIR/start.txt'",
            "resourceFiles": [{"configMapKeyRef": {"name": "files", "key": "greeting"}, "filePath": "greeting.txt"}]}}})
    try:
        wait_for("the node idle", lambda: any((c.get("status") or {}).get("state") == "idle" for c in objects.list("ComputeNode")), 120)
        objects.create(job("rfj", "rf", onAllTasksComplete="terminatejob", jobPreparationTask={
            "commandLine": "/bin/sh -c 'cp prep.txt $AZ_BATCH_NODE_SHARED_DIR/prep.txt'",
            "resourceFiles": [{"configMapKeyRef": {"name": "files", "key": "greeting"}, "filePath": "prep.txt", "fileMode": "0644"}]}))
        objects.create(task("reader", "rfj", "/bin/sh -c 'cat $AZ_BATCH_NODE_SHARED_DIR/start.txt $AZ_BATCH_NODE_SHARED_DIR/prep.txt'"))
        objects.wait_job_done("rfj", 120)
        st = objects.status("Task", "reader")
        assert st["executionInfo"]["result"] == "success", st
        assert core_v1.read_namespaced_pod_log(st["podName"], namespace) == "hi from a configmap\n" * 2
    finally:
        objects.delete("Pool", "rf")
        wait_for("the node released", lambda: "podbatch.io/pool" not in (core_v1.read_node(NODE).metadata.labels or {}), 120)
