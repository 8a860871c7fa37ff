"""`kubectl podbatch import --apply` against the local cluster: a Batch pool (its VM image
dropped, its Nodes from kwok), a job and a task collection, written as Azure Batch's REST API
takes them, become podbatch objects, and the job runs to completion on simulated nodes."""
from __future__ import annotations

import json

import pytest

from kit import wait_for
from podbatch.cli import main as cli

pytestmark = pytest.mark.e2e

POOL = {
    "id": "Import_Pool", "vmSize": "standard_d2s_v3",
    "virtualMachineConfiguration": {
        "imageReference": {"publisher": "Canonical", "offer": "0001-com-ubuntu-server-focal", "sku": "20_04-lts"},
        "nodeAgentSKUId": "batch.node.ubuntu 20.04"},
    "targetDedicatedNodes": 2, "taskSlotsPerNode": 2, "taskSchedulingPolicy": {"nodeFillType": "Pack"},
}
JOB = {"id": "ImportJob", "priority": 5, "poolInfo": {"poolId": "Import_Pool"}, "onAllTasksComplete": "terminatejob",
       "constraints": {"maxWallClockTime": "P10675199DT2H48M5.4775807S", "maxTaskRetryCount": 1}}
TASKS = {"value": [{"id": f"frame{i}", "commandLine": "/bin/true",
                    "environmentSettings": [{"name": "FRAME", "value": str(i)}]} for i in range(1, 6)]}


def test_import_apply_pool_job_and_task_collection_runs_the_job(operator, objects, kubeconfig, namespace,
                                                                tmp_path, capsys):
    common = ["--kubeconfig", kubeconfig, "-n", namespace]
    for name, body, extra in (("pool.json", POOL, ["--node-group", "kwok"]), ("job.json", JOB, []),
                              ("tasks.json", TASKS, ["--job", "ImportJob"])):
        path = tmp_path / name
        path.write_text(json.dumps(body))
        rc = cli.main(["import", str(path), "--apply", *extra, *common])
        out, err = capsys.readouterr()
        assert rc == 0, err
        if name == "pool.json":
            assert "pool.podbatch.io/import-pool created" in out
            assert "virtualMachineConfiguration.imageReference" in err   # said, not lost
        if name == "tasks.json":
            assert "task.podbatch.io/importjob-frame5 created" in out

    pool = objects.get("Pool", "import-pool")
    assert pool["spec"]["nodeGroup"] == {"provider": "kwok"} and pool["spec"]["taskSchedulingPolicy"] == {"nodeFillType": "pack"}
    st = objects.wait_job_done("importjob", timeout=240)
    assert st["taskCounts"] == {"active": 0, "running": 0, "completed": 5, "succeeded": 5, "failed": 0}
    assert st["executionInfo"]["terminateReason"] == "AllTasksComplete"
    task = objects.get("Task", "importjob-frame3")
    assert task["spec"]["id"] == "frame3" and task["spec"]["environmentSettings"] == [{"name": "FRAME", "value": "3"}]
    assert task["status"]["nodeInfo"]["poolId"] == "import-pool"


SWEEP_TEMPLATE = {
    "parameters": {"frames": {"type": "int", "defaultValue": 6}},
    "job": {"type": "Microsoft.Batch/batchAccounts/jobs", "apiVersion": "2016-12-01", "properties": {
        "id": "SweepJob", "poolInfo": {"poolId": "Import_Pool"}, "onAllTasksComplete": "terminateJob",
        "taskFactory": {"type": "parametricSweep",
                        "parameterSets": [{"start": 1, "end": "[parameters('frames')]", "step": 1}],
                        "repeatTask": {"commandLine": "/bin/sh -c 'echo frame {0:3}'"},
                        "mergeTask": {"commandLine": "/bin/true"}}}},
}


def test_import_apply_a_parametric_sweep_template_is_one_collection_and_its_merge_task_runs_last(
        operator, objects, kubeconfig, namespace, tmp_path, capsys):
    common = ["--kubeconfig", kubeconfig, "-n", namespace]
    for name, body, extra in (("pool.json", POOL, ["--node-group", "kwok"]), ("sweep.json", SWEEP_TEMPLATE, [])):
        path = tmp_path / name
        path.write_text(json.dumps(body))
        rc = cli.main(["import", str(path), "--apply", *extra, *common])
        out, err = capsys.readouterr()
        assert rc == 0, err
    assert "taskcollection.podbatch.io/sweepjob created" in out and "task.podbatch.io/sweepjob-merge created" in out, out
    st = objects.wait_job_done("sweepjob", timeout=240)
    assert st["taskCounts"]["succeeded"] == 7 and st["taskCounts"]["failed"] == 0, st
    coll = wait_for("the collection's ends", lambda: (lambda s: s.get("succeededIndexes") == "0-5" and s)(
        objects.status("TaskCollection", "sweepjob")), 60)
    assert coll["taskCounts"]["succeeded"] == 6 and coll["size"] == 6, coll
    merge = objects.get("Task", "sweepjob-merge")["status"]
    assert merge["executionInfo"]["result"] == "success"   # it waited for ids 0-5, the collection's tasks
