"""The API server enforces the generated CRD schemas: bad objects are rejected with 422
and a message naming the field, status fields the controllers write survive, and
unknown fields are handled as honestly as the server allows.

Runs against any cluster (KUBECONFIG); installs the CRDs itself, idempotently.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from podbatch import API_VERSION, GROUP, VERSION
from podbatch.api import KINDS, InvalidObject, validate_object

from kit import install_crds

pytestmark = pytest.mark.integration

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
PLURAL = {kind: info.plural for kind, info in KINDS.items()}


def server_minor(api_client) -> int:
    from kubernetes import client
    info = client.VersionApi(api_client).get_code()
    return int("".join(ch for ch in info.minor if ch.isdigit()))


@pytest.fixture(scope="module")
def crds(api_client):
    install_crds(api_client)


@pytest.fixture(scope="module")
def ns(core_v1, crds):
    """One namespace for the whole module (the conftest one is per test; this module makes ~60 objects)."""
    from kubernetes import client
    name = f"t-crd-{uuid.uuid4().hex[:6]}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"podbatch.io/test": "1"})))
    yield name
    core_v1.delete_namespace(name)


def body(kind: str, spec: dict, name: str | None = None) -> dict:
    return {"apiVersion": API_VERSION, "kind": kind,
            "metadata": {"name": name or f"{kind.lower()}-{uuid.uuid4().hex[:6]}"}, "spec": spec}


def create(custom_api, ns: str, obj: dict, **kwargs) -> dict:
    return custom_api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL[obj["kind"]], obj, **kwargs)


KWOK = {"provider": "kwok"}
POOL = {"nodeGroup": KWOK}
JOB = {"poolInfo": {"poolId": "p"}}
TASK = {"jobName": "j", "commandLine": "echo hi"}
NODE = {"poolName": "p", "nodeName": "n1"}
SCHED = {"schedule": {"recurrenceInterval": "PT1H"}, "jobSpecification": JOB}

# (kind, spec, text the 422 message must contain: the field's path)
INVALID = [
    ("Pool", {**POOL, "taskSlotsPerNode": 0}, "spec.taskSlotsPerNode"),
    ("Pool", {**POOL, "taskSlotsPerNode": 300}, "spec.taskSlotsPerNode"),
    ("Pool", {**POOL, "targetDedicatedNodes": -1}, "spec.targetDedicatedNodes"),
    ("Pool", {**POOL, "targetLowPriorityNodes": -3}, "spec.targetLowPriorityNodes"),
    ("Pool", {**POOL, "targetDedicatedNodes": "three"}, "spec.targetDedicatedNodes"),
    ("Pool", {**POOL, "taskSchedulingPolicy": {"nodeFillType": "fill"}}, "spec.taskSchedulingPolicy.nodeFillType"),
    ("Pool", {**POOL, "resizeTimeout": "fifteen minutes"}, "spec.resizeTimeout"),
    ("Pool", {**POOL, "autoScaleEvaluationInterval": "PT"}, "spec.autoScaleEvaluationInterval"),
    ("Pool", {"targetDedicatedNodes": 1}, "spec.nodeGroup"),
    ("Pool", {"nodeGroup": {"provider": "aws"}}, "spec.nodeGroup.provider"),
    ("Pool", {**POOL, "imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
    ("Pool", {**POOL, "nodeDeallocationOption": "kill"}, "spec.nodeDeallocationOption"),
    ("Pool", {**POOL, "enableAutoScale": "yes"}, "spec.enableAutoScale"),
    ("Pool", {**POOL, "startTask": {"waitForSuccess": True}}, "spec.startTask.commandLine"),
    ("Pool", {**POOL, "startTask": {"commandLine": "x", "maxTaskRetryCount": 101}}, "spec.startTask.maxTaskRetryCount"),
    ("Pool", {"nodeGroup": {"provider": "static", "static": {"nodeSelector": {"a": 1}}}}, "spec.nodeGroup.static.nodeSelector.a"),
    ("Job", {**JOB, "priority": 1001}, "spec.priority"),
    ("Job", {**JOB, "priority": -1001}, "spec.priority"),
    ("Job", {"priority": 1}, "spec.poolInfo"),
    ("Job", {**JOB, "onAllTasksComplete": "stop"}, "spec.onAllTasksComplete"),
    ("Job", {**JOB, "onTaskFailure": "retry"}, "spec.onTaskFailure"),
    ("Job", {**JOB, "maxParallelTasks": -2}, "spec.maxParallelTasks"),
    ("Job", {**JOB, "constraints": {"maxWallClockTime": "forever"}}, "spec.constraints.maxWallClockTime"),
    ("Job", {**JOB, "constraints": {"maxTaskRetryCount": -2}}, "spec.constraints.maxTaskRetryCount"),
    ("Job", {**JOB, "desiredState": "paused"}, "spec.desiredState"),
    ("Job", {**JOB, "jobManagerTask": {"id": "m"}}, "spec.jobManagerTask.commandLine"),
    ("Job", {"poolInfo": {"autoPoolSpecification": {"pool": {**POOL, "taskSlotsPerNode": -1}}}},
     "spec.poolInfo.autoPoolSpecification.pool.taskSlotsPerNode"),
    ("Task", {"commandLine": "echo"}, "spec.jobName"),
    ("Task", {"jobName": "j"}, "spec.commandLine"),
    ("Task", {"jobName": "j", "commandLine": ["echo", "hi"]}, "spec.commandLine"),
    ("Task", {**TASK, "id": "bad id!"}, "spec.id"),
    ("Task", {**TASK, "id": "x" * 65}, "spec.id"),
    ("Task", {**TASK, "requiredSlots": 0}, "spec.requiredSlots"),
    ("Task", {**TASK, "priority": 5000}, "spec.priority"),
    ("Task", {**TASK, "dependsOn": {"taskIds": ["ok", "no way"]}}, "spec.dependsOn.taskIds"),
    ("Task", {**TASK, "exitConditions": {"default": {"jobAction": "explode"}}}, "spec.exitConditions.default.jobAction"),
    ("Task", {**TASK, "outputFiles": [{"filePattern": "*", "destination": {"httpUrl": "h"},
                                       "uploadOptions": {"uploadCondition": "always"}}]}, "uploadCondition"),
    ("Task", {**TASK, "resourceFiles": [{"httpUrl": "h", "fileMode": "999"}]}, "fileMode"),
    ("Task", {**TASK, "constraints": {"retentionTime": "7 days"}}, "spec.constraints.retentionTime"),
    ("Task", {**TASK, "environmentSettings": [{"value": "v"}]}, "name"),
    ("Task", {**TASK, "multiInstanceSettings": {"numberOfInstances": 0}}, "spec.multiInstanceSettings.numberOfInstances"),
    ("Task", {**TASK, "userIdentity": {"autoUser": {"elevationLevel": "root"}}}, "spec.userIdentity.autoUser.elevationLevel"),
    ("Task", {**TASK, "desiredState": "paused"}, "spec.desiredState"),
    ("Task", {**TASK, "containerSettings": {"workingDirectory": "taskWorkingDirectory"}}, "spec.containerSettings.imageName"),
    ("ComputeNode", {"poolName": "p"}, "spec.nodeName"),
    ("ComputeNode", {**NODE, "schedulingState": "off"}, "spec.schedulingState"),
    ("ComputeNode", {**NODE, "reboot": {"nodeRebootOption": "requeue"}}, "spec.reboot.requestId"),
    ("ComputeNode", {**NODE, "remove": {"requestId": "r", "nodeDeallocationOption": "now"}}, "spec.remove.nodeDeallocationOption"),
    ("JobSchedule", {**SCHED, "schedule": {"doNotRunUntil": "tomorrow"}}, "spec.schedule.doNotRunUntil"),
    ("JobSchedule", {**SCHED, "schedule": {"recurrenceInterval": "hourly"}}, "spec.schedule.recurrenceInterval"),
    ("JobSchedule", {"schedule": {"recurrenceInterval": "PT1H"}}, "spec.jobSpecification"),
    ("JobSchedule", {**SCHED, "jobSpecification": {**JOB, "priority": 2000}}, "spec.jobSpecification.priority"),
]


@pytest.mark.parametrize("kind, spec, field", INVALID, ids=[f"{k}-{f}-{i}" for i, (k, _, f) in enumerate(INVALID)])
def test_server_rejects_invalid_object(custom_api, ns, kind, spec, field):
    from kubernetes.client.rest import ApiException
    with pytest.raises(ApiException) as e:
        create(custom_api, ns, body(kind, spec), dry_run="All")
    assert e.value.status == 422, e.value.body
    message = json.loads(e.value.body)["message"]
    assert field in message, message
    # The client-side check the CLI runs agrees.
    with pytest.raises(InvalidObject):
        validate_object(body(kind, spec))


def test_server_accepts_and_defaults_a_minimal_object_of_every_kind(custom_api, ns):
    specs = {"Pool": POOL, "Job": JOB, "Task": TASK, "ComputeNode": NODE, "JobSchedule": SCHED}
    for kind, spec in specs.items():
        created = create(custom_api, ns, body(kind, spec))
        model = validate_object(created)  # what the server stores is valid, strictly
        assert model.spec.to_dict() == created["spec"], kind
    pool = create(custom_api, ns, body("Pool", POOL))
    assert pool["spec"]["taskSlotsPerNode"] == 1 and pool["spec"]["image"] == "busybox"
    assert pool["spec"]["resizeTimeout"] == "PT15M"


# Status as the controllers write it: every field must survive (a structural schema
# would prune a misspelt one silently).
STATUS = {
    "Pool": {"allocationState": "resizing", "allocationStateTransitionTime": "2024-05-01T10:00:00Z",
             "currentDedicatedNodes": 2, "currentLowPriorityNodes": 0,
             "nodeCounts": {"creating": 1, "starting": 0, "waitingForStartTask": 1, "startTaskFailed": 0, "idle": 2,
                            "running": 1, "offline": 0, "rebooting": 0, "reimaging": 0, "leavingPool": 0,
                            "unusable": 0, "unknown": 0, "preempted": 0, "total": 5},
             "resizeErrors": [{"code": "ResizeTimedOut", "message": "took too long"}],
             "autoScaleRun": {"timestamp": "2024-05-01T10:00:00Z", "results": "$TargetDedicatedNodes=2",
                              "error": {"code": "X", "message": "y"}},
             "conditions": [{"type": "Ready", "status": "False", "reason": "Resizing", "message": "m",
                             "lastTransitionTime": "2024-05-01T10:00:00Z", "observedGeneration": 1}],
             "observedGeneration": 1},
    "ComputeNode": {"state": "running", "stateTransitionTime": "2024-05-01T10:00:00Z", "schedulingState": "enabled",
                    "runningTasksCount": 1, "runningTaskSlotsCount": 2, "totalTasksRun": 7, "totalTasksSucceeded": 6,
                    "recentTasks": [{"jobId": "j", "taskId": "1", "taskName": "j-1", "podName": "p", "state": "running",
                                     "exitCode": 0}],
                    "startTaskInfo": {"state": "completed", "startTime": "2024-05-01T10:00:00Z",
                                      "endTime": "2024-05-01T10:00:01Z", "exitCode": 1, "retryCount": 2,
                                      "result": "failure", "failureInfo": {"category": "usererror", "code": "NonZero",
                                                                           "message": "exit 1"},
                                      "stderrTail": "boom"},
                    "ipAddress": "10.0.0.1", "isDedicated": True, "lastBootTime": "2024-05-01T09:00:00Z",
                    "errors": [{"code": "E", "message": "m"}],
                    "handledRequests": {"reboot": "r1", "reimage": "r2", "remove": "r3"},
                    "conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 3},
    "Job": {"state": "active", "stateTransitionTime": "2024-05-01T10:00:00Z", "previousState": "disabled",
            "executionInfo": {"startTime": "2024-05-01T10:00:00Z", "endTime": "2024-05-01T11:00:00Z", "poolId": "p",
                              "terminateReason": "AllTasksComplete",
                              "schedulingError": {"category": "usererror", "code": "PoolNotFound", "message": "m",
                                                  "details": [{"name": "pool", "value": "p"}]}},
            "taskCounts": {"active": 1, "running": 2, "completed": 3, "succeeded": 2, "failed": 1},
            "taskSlotCounts": {"active": 1, "running": 2, "completed": 3, "succeeded": 2, "failed": 1},
            "preparationTasks": [{"nodeName": "n", "state": "completed", "exitCode": 0, "startTime": "2024-05-01T10:00:00Z",
                                  "endTime": "2024-05-01T10:00:01Z", "retryCount": 0, "result": "success"}],
            "releaseTasks": [{"nodeName": "n", "state": "running", "retryCount": 0}],
            "conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 2},
    "Task": {"state": "running", "stateTransitionTime": "2024-05-01T10:00:00Z", "previousState": "active",
             "executionInfo": {"startTime": "2024-05-01T10:00:00Z", "exitCode": 3, "result": "failure",
                               "failureInfo": {"category": "usererror", "code": "FailureExitCode", "message": "m",
                                               "details": [{"name": "a", "value": "b"}]},
                               "retryCount": 1, "requeueCount": 2, "lastRetryTime": "2024-05-01T10:00:00Z",
                               "lastRequeueTime": "2024-05-01T10:00:00Z"},
             "nodeInfo": {"poolId": "p", "nodeId": "p-1", "nodeName": "node-1", "taskRootDirectory": "/x",
                          "affinityId": "node-1"},
             "pendingReason": {"reason": "NoFreeSlots", "message": "m", "queuePosition": 4},
             "attempt": 3, "podName": "j-1-3",
             "subtasks": [{"id": 1, "state": "running", "nodeName": "n", "podName": "p", "exitCode": 0,
                           "startTime": "2024-05-01T10:00:00Z", "endTime": "2024-05-01T10:00:00Z"}],
             "handledReactivateRequestId": "r", "conditions": [{"type": "Ready", "status": "True"}],
             "observedGeneration": 1},
    "JobSchedule": {"state": "active", "executionInfo": {"nextRunTime": "2024-05-01T10:00:00Z",
                                                         "recentJob": {"id": "s-1", "name": "s-1"},
                                                         "endTime": "2024-05-01T10:00:00Z"},
                    "conditions": [{"type": "Ready", "status": "True"}]},
}


@pytest.mark.parametrize("kind", list(STATUS))
def test_status_written_by_controllers_survives(custom_api, ns, kind):
    specs = {"Pool": POOL, "Job": JOB, "Task": TASK, "ComputeNode": NODE, "JobSchedule": SCHED}
    obj = create(custom_api, ns, body(kind, specs[kind]))
    name = obj["metadata"]["name"]
    patched = custom_api.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PLURAL[kind], name, {"status": STATUS[kind]})
    assert patched["status"] == STATUS[kind]
    model = KINDS[kind].model.model_validate(patched)
    assert model.status.to_dict() == STATUS[kind]


def test_server_rejects_a_bad_status_enum(custom_api, ns):
    from kubernetes.client.rest import ApiException
    obj = create(custom_api, ns, body("Task", TASK))
    with pytest.raises(ApiException) as e:
        custom_api.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, "tasks", obj["metadata"]["name"], {"status": {"state": "exploded"}})
    assert e.value.status == 422 and "status.state" in json.loads(e.value.body)["message"]


def test_unknown_fields(api_client, custom_api, ns):
    """A misspelt field must not pass unnoticed.

    Structural schemas make the server *prune* unknown fields. Only servers >= 1.25
    reject them, with fieldValidation=Strict (GA in 1.27); a 1.20 server ignores that
    parameter and prunes silently. So the honest guarantee is two-layered: on a new
    server Strict rejects; on any server `podbatch.api.validate_object` (pydantic,
    extra="forbid"), which `kubectl podbatch` runs before sending, rejects.
    """
    from kubernetes.client.rest import ApiException
    obj = body("Pool", {**POOL, "targetDedicatedNode": 3})  # typo of targetDedicatedNodes
    with pytest.raises(InvalidObject, match="targetDedicatedNode"):
        validate_object(obj)
    if server_minor(api_client) >= 25:
        with pytest.raises(ApiException) as e:
            create(custom_api, ns, obj, field_validation="Strict")
        assert e.value.status == 422 and "targetDedicatedNode" in e.value.body
    else:
        created = create(custom_api, ns, obj, field_validation="Strict")
        assert "targetDedicatedNode" not in created["spec"]  # pruned, silently
        assert created["spec"]["targetDedicatedNodes"] == 0


CEL_INVALID = [
    ("Pool", {"nodeGroup": {"provider": "static"}}, "nodeGroup.static is required"),
    ("Pool", {**POOL, "enableAutoScale": True}, "autoScaleFormula is required"),
    ("Job", {"poolInfo": {}}, "exactly one of poolId"),
    ("Job", {**JOB, "maxParallelTasks": 0}, "maxParallelTasks must be -1"),
    ("Task", {**TASK, "resourceFiles": [{"filePath": "f"}]}, "exactly one of httpUrl"),
    ("Task", {**TASK, "dependsOn": {"taskIdRanges": [{"start": 9, "end": 1}]}}, "start must not be greater"),
    ("JobSchedule", {**SCHED, "schedule": {"doNotRunUntil": "2030-01-02T00:00:00Z",
                                           "doNotRunAfter": "2030-01-01T00:00:00Z"}}, "doNotRunAfter must be after"),
]


@pytest.mark.parametrize("kind, spec, message", CEL_INVALID)
def test_cel_rules_on_servers_that_run_them(api_client, custom_api, ns, kind, spec, message):
    """CEL (x-kubernetes-validations) is enforced from 1.25; older servers drop the rules,
    and tests/unit/test_crds_cel.py proves them with cel-python instead."""
    from kubernetes.client.rest import ApiException
    if server_minor(api_client) < 25:
        pytest.skip("this API server predates CEL validation rules (needs >= 1.25)")
    with pytest.raises(ApiException) as e:
        create(custom_api, ns, body(kind, spec), dry_run="All")
    assert e.value.status == 422 and message in e.value.body
