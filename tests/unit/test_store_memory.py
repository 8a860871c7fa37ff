"""What the store keeps of a Task: bodies parsed one by one share their keys and short
values (each event is parsed on its own), managedFields never stay, and a completed Task
keeps only what the engine still reads."""
from __future__ import annotations

import json

import pytest

from podbatch.controllers.store import Store, compact_completed, shared_strings

pytestmark = pytest.mark.unit

BODY = {"apiVersion": "podbatch.io/v1alpha1", "kind": "Task",
        "metadata": {"name": "t1", "namespace": "ns", "uid": "u1", "resourceVersion": "7", "generation": 1,
                     "creationTimestamp": "2026-12-01T00:00:00Z", "annotations": {"sim.podbatch.io/duration": "3"},
                     "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
        "spec": {"jobName": "j", "commandLine": "/bin/sh -c 'echo hello'", "environmentSettings": [{"name": "A", "value": "1"}],
                 "exitConditions": {"default": {"dependencyAction": "satisfy"}}},
        "status": {"state": "completed", "attempt": 1, "podName": "t1-1", "previousState": "running",
                   "nodeInfo": {"nodeId": "p-0", "taskRootDirectory": "/x"},
                   "executionInfo": {"result": "success", "exitCode": 0},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "done"}]}}


def test_two_parses_share_keys_and_short_values_and_drop_managed_fields():
    a = shared_strings(json.loads(json.dumps(BODY)))
    b = shared_strings(json.loads(json.dumps(BODY)))
    assert a == {**BODY, "metadata": {k: v for k, v in BODY["metadata"].items() if k != "managedFields"}}
    ka, kb = next(iter(a["metadata"])), next(iter(b["metadata"]))
    assert ka is kb                                                        # one "name" key for both
    assert a["status"]["conditions"][0]["reason"] is b["status"]["conditions"][0]["reason"]


def test_a_completed_task_keeps_what_the_engine_reads():
    done = compact_completed(BODY)
    assert done["spec"] == {"jobName": "j", "exitConditions": {"default": {"dependencyAction": "satisfy"}}}
    assert done["status"]["podName"] == "t1-1" and done["status"]["nodeInfo"]["nodeId"] == "p-0"
    assert done["status"]["executionInfo"]["result"] == "success" and done["status"]["conditions"]
    assert "annotations" not in done["metadata"] and done["metadata"]["uid"] == "u1"
    s = Store()
    s.put_task(json.loads(json.dumps(BODY)))
    kept = s.tasks["ns/t1"]
    assert "commandLine" not in kept["spec"] and "managedFields" not in kept["metadata"]
    assert s.counts_of("ns/j", None)[0]["succeeded"] == 1
    # a reactivation (a change of the spec) brings the whole body back
    again = json.loads(json.dumps(BODY))
    again["metadata"]["resourceVersion"] = "8"
    again["spec"]["reactivateRequestId"] = "r1"
    again["status"] = {"state": "active", "attempt": 2}
    s.put_task(again)
    assert s.tasks["ns/t1"]["spec"]["commandLine"] == BODY["spec"]["commandLine"]
