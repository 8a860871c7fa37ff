"""The generated CRDs: structural, named as DESIGN.md says, and holding every field the
controllers write (a structural schema prunes unknown status fields silently)."""
from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from podbatch import GROUP, VERSION
from podbatch.api import KINDS
from podbatch.api.common import DURATION_PATTERN
from podbatch.api.crdgen import ALLOWED_KEYS, crd, render


def all_crds() -> dict[str, dict]:
    return {kind: crd(info) for kind, info in KINDS.items()}


def schema_of(kind: str) -> dict[str, Any]:
    return crd(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(schema: dict[str, Any], path: str = ""):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}[*]")


def at(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = schema
    for part in dotted.split("."):
        if part == "[]":
            node = node["items"]
        else:
            assert part in node.get("properties", {}), f"{dotted}: no {part!r} in schema"
            node = node["properties"][part]
    return node


def test_names_scope_and_subresources():
    short = {"Pool": "bpool", "ComputeNode": "bnode", "Job": "bjob", "Task": "btask", "JobSchedule": "bjs",
             "PoolGrant": "bgrant", "TaskCollection": "btc"}
    for kind, c in all_crds().items():
        spec = c["spec"]
        grant = kind == "PoolGrant"   # cluster-scoped: only a cluster admin grants nodes
        assert c["apiVersion"] == "apiextensions.k8s.io/v1"
        assert c["metadata"]["name"] == f"{spec['names']['plural']}.{GROUP}"
        assert spec["group"] == GROUP and spec["scope"] == ("Cluster" if grant else "Namespaced")
        assert spec["names"]["kind"] == kind and spec["names"]["shortNames"] == [short[kind]]
        assert spec["names"].get("categories") in (([], None) if grant else (["podbatch"],))
        (version,) = spec["versions"]
        assert version["name"] == VERSION and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}


def test_schemas_are_structural():
    for kind in KINDS:
        for path, node in walk(schema_of(kind)):
            assert set(node) <= ALLOWED_KEYS, (kind, path, set(node) - ALLOWED_KEYS)
            assert "$ref" not in node and "title" not in node
            assert "type" in node or node.get("x-kubernetes-int-or-string") or \
                node.get("x-kubernetes-preserve-unknown-fields"), (kind, path)
            assert not ("properties" in node and "additionalProperties" in node), (kind, path)
            if "default" in node:
                assert not path.startswith(".status"), (kind, path, "status has no defaults")
            for key in node.get("required", []):
                assert key in node["properties"], (kind, path, key)


def test_printer_columns_point_at_real_fields():
    for kind, c in all_crds().items():
        schema = schema_of(kind)
        columns = c["spec"]["versions"][0]["additionalPrinterColumns"]
        assert columns[-1]["name"] == "Age"
        for col in columns[:-1]:
            at(schema, col["jsonPath"].lstrip("."))


# Fields the controllers write or read, by their exact names.
FIELDS = {
    "Pool": [
        "spec.nodeGroup.provider", "spec.nodeGroup.kwok.capacity.cpu", "spec.nodeGroup.kwok.labels",
        "spec.nodeGroup.kwok.instanceType", "spec.nodeGroup.static.nodeSelector",
        "spec.nodeGroup.clusterapi.scaleTargetRef.apiVersion", "spec.nodeGroup.clusterapi.scaleTargetRef.kind",
        "spec.nodeGroup.clusterapi.scaleTargetRef.name",
        "spec.vmSize", "spec.image", "spec.imagePullPolicy", "spec.targetDedicatedNodes", "spec.targetLowPriorityNodes",
        "spec.resizeTimeout", "spec.nodeDeallocationOption", "spec.enableAutoScale", "spec.autoScaleFormula",
        "spec.autoScaleEvaluationInterval", "spec.taskSlotsPerNode", "spec.taskSchedulingPolicy.nodeFillType",
        "spec.enableInterNodeCommunication", "spec.startTask.commandLine", "spec.startTask.waitForSuccess",
        "spec.startTask.maxTaskRetryCount", "spec.startTask.userIdentity.autoUser.elevationLevel",
        "spec.applicationPackageReferences.[].applicationId", "spec.metadata.[].value", "spec.nodeRootDir",
        "status.allocationState", "status.allocationStateTransitionTime", "status.currentDedicatedNodes",
        "status.currentLowPriorityNodes", "status.nodeCounts.waitingForStartTask", "status.nodeCounts.leavingPool",
        "status.nodeCounts.total", "status.resizeErrors.[].code", "status.autoScaleRun.timestamp",
        "status.autoScaleRun.results", "status.autoScaleRun.error.message", "status.conditions.[].observedGeneration",
        "status.observedGeneration",
    ],
    "ComputeNode": [
        "spec.poolName", "spec.nodeName", "spec.isDedicated", "spec.schedulingState", "spec.nodeDisableSchedulingOption",
        "spec.reboot.requestId", "spec.reboot.nodeRebootOption", "spec.reimage.nodeReimageOption",
        "spec.remove.nodeDeallocationOption", "status.state", "status.stateTransitionTime", "status.schedulingState",
        "status.runningTasksCount", "status.runningTaskSlotsCount", "status.totalTasksRun", "status.totalTasksSucceeded",
        "status.recentTasks.[].podName", "status.recentTasks.[].exitCode", "status.startTaskInfo.stderrTail",
        "status.startTaskInfo.failureInfo.message", "status.startTaskInfo.retryCount", "status.startTaskInfo.result",
        "status.ipAddress", "status.isDedicated", "status.lastBootTime", "status.errors.[].code",
        "status.handledRequests.reboot", "status.handledRequests.reimage", "status.handledRequests.remove",
        "status.conditions",
    ],
    "Job": [
        "spec.poolInfo.poolId", "spec.poolInfo.autoPoolSpecification.autoPoolIdPrefix",
        "spec.poolInfo.autoPoolSpecification.poolLifetimeOption", "spec.poolInfo.autoPoolSpecification.keepAlive",
        "spec.poolInfo.autoPoolSpecification.pool.taskSlotsPerNode", "spec.displayName", "spec.priority",
        "spec.maxParallelTasks", "spec.allowTaskPreemption", "spec.constraints.maxWallClockTime",
        "spec.constraints.maxTaskRetryCount", "spec.jobManagerTask.killJobOnCompletion", "spec.jobManagerTask.runExclusive",
        "spec.jobManagerTask.allowLowPriorityNode", "spec.jobManagerTask.authenticationTokenSettings.access",
        "spec.jobManagerTask.outputFiles", "spec.jobManagerTask.requiredSlots",
        "spec.jobPreparationTask.waitForSuccess", "spec.jobPreparationTask.rerunOnNodeRebootAfterSuccess",
        "spec.jobReleaseTask.maxWallClockTime", "spec.jobReleaseTask.retentionTime", "spec.commonEnvironmentSettings",
        "spec.onAllTasksComplete", "spec.onTaskFailure", "spec.usesTaskDependencies", "spec.metadata",
        "spec.desiredState", "spec.disableTasks", "spec.terminateReason",
        "status.state", "status.stateTransitionTime", "status.previousState", "status.executionInfo.startTime",
        "status.executionInfo.poolId", "status.executionInfo.terminateReason",
        "status.executionInfo.schedulingError.details.[].name", "status.taskCounts.succeeded",
        "status.taskSlotCounts.running", "status.preparationTasks.[].nodeName", "status.preparationTasks.[].result",
        "status.releaseTasks.[].exitCode", "status.conditions", "status.observedGeneration",
    ],
    "Task": [
        "spec.jobName", "spec.id", "spec.displayName", "spec.commandLine", "spec.containerSettings.imageName",
        "spec.containerSettings.containerRunOptions", "spec.containerSettings.workingDirectory",
        "spec.resourceFiles.[].httpUrl", "spec.resourceFiles.[].storageContainerUrl", "spec.resourceFiles.[].blobPrefix",
        "spec.resourceFiles.[].configMapKeyRef.key", "spec.resourceFiles.[].secretKeyRef.name",
        "spec.resourceFiles.[].filePath", "spec.resourceFiles.[].fileMode",
        "spec.outputFiles.[].destination.container.containerUrl",
        "spec.outputFiles.[].destination.persistentVolumeClaim.claimName", "spec.outputFiles.[].destination.httpUrl",
        "spec.outputFiles.[].uploadOptions.uploadCondition", "spec.environmentSettings.[].name",
        "spec.constraints.retentionTime", "spec.constraints.maxTaskRetryCount", "spec.requiredSlots", "spec.priority",
        "spec.affinityInfo.affinityId", "spec.exitConditions.exitCodes.[].exitOptions.jobAction",
        "spec.exitConditions.exitCodeRanges.[].exitOptions.dependencyAction", "spec.exitConditions.preProcessingError",
        "spec.exitConditions.fileUploadError", "spec.exitConditions.default", "spec.dependsOn.taskIds",
        "spec.dependsOn.taskIdRanges.[].end", "spec.multiInstanceSettings.numberOfInstances",
        "spec.multiInstanceSettings.coordinationCommandLine", "spec.multiInstanceSettings.commonResourceFiles",
        "spec.userIdentity.userName", "spec.userIdentity.autoUser.scope", "spec.applicationPackageReferences",
        "spec.resources.requests", "spec.resources.limits", "spec.desiredState", "spec.reactivateRequestId",
        "status.state", "status.stateTransitionTime", "status.previousState", "status.executionInfo.exitCode",
        "status.executionInfo.result", "status.executionInfo.failureInfo.category",
        "status.executionInfo.failureInfo.details.[].value", "status.executionInfo.retryCount",
        "status.executionInfo.requeueCount", "status.executionInfo.lastRetryTime", "status.executionInfo.lastRequeueTime",
        "status.nodeInfo.poolId", "status.nodeInfo.nodeId", "status.nodeInfo.nodeName",
        "status.nodeInfo.taskRootDirectory", "status.nodeInfo.affinityId", "status.pendingReason.reason",
        "status.pendingReason.message", "status.pendingReason.queuePosition", "status.attempt", "status.podName",
        "status.subtasks.[].id", "status.subtasks.[].podName", "status.subtasks.[].exitCode",
        "status.handledReactivateRequestId", "status.conditions", "status.observedGeneration",
    ],
    "JobSchedule": [
        "spec.schedule.doNotRunUntil", "spec.schedule.doNotRunAfter", "spec.schedule.startWindow",
        "spec.schedule.recurrenceInterval", "spec.schedule.cron", "spec.schedule.timeZone",
        "spec.jobSpecification.poolInfo.poolId", "spec.jobSpecification.jobManagerTask.commandLine",
        "spec.desiredState", "spec.metadata", "status.state", "status.executionInfo.nextRunTime",
        "status.executionInfo.recentJob.id", "status.executionInfo.recentJob.name", "status.executionInfo.endTime",
        "status.conditions",
    ],
}


@pytest.mark.parametrize("kind", list(FIELDS))
def test_fields_exist_with_their_batch_names(kind):
    schema = schema_of(kind)
    for dotted in FIELDS[kind]:
        at(schema, dotted)


def test_validation_details():
    pool, job, task, node = (schema_of(k) for k in ("Pool", "Job", "Task", "ComputeNode"))
    slots = at(pool, "spec.taskSlotsPerNode")
    assert (slots["minimum"], slots["maximum"], slots["default"]) == (1, 256, 1)
    assert at(pool, "spec.taskSchedulingPolicy.nodeFillType")["enum"] == ["spread", "pack"]
    resize = {k: v for k, v in at(pool, "spec.resizeTimeout").items() if k != "description"}
    assert resize == {"default": "PT15M", "pattern": DURATION_PATTERN, "type": "string"}
    assert at(pool, "spec.nodeGroup.kwok.capacity.pods")["x-kubernetes-int-or-string"] is True
    assert at(pool, "spec.nodeGroup.kwok.labels")["additionalProperties"] == {"type": "string"}
    assert at(pool, "spec")["required"] == ["nodeGroup"]
    prio = at(job, "spec.priority")
    assert (prio["minimum"], prio["maximum"], prio["default"]) == (-1000, 1000, 0)
    assert at(task, "spec.id")["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    assert sorted(at(task, "spec")["required"]) == ["commandLine", "jobName"]
    assert at(task, "spec.constraints.retentionTime")["default"] == "P7D"
    assert at(task, "spec.resources.requests")["additionalProperties"] == {"x-kubernetes-int-or-string": True}
    assert at(node, "status.state")["enum"][-1] == "preempted"
    conditions = at(node, "status.conditions")
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert at(node, "status.conditions.[]")["required"] == ["type", "status"]
    assert at(task, "status.executionInfo.startTime")["format"] == "date-time"


@pytest.mark.parametrize("value, ok", [
    ("PT30M", True), ("P1DT2H", True), ("PT0.5S", True), ("30m", True), ("1h30m", True), ("500ms", True),
    ("P", False), ("PT", False), ("30", False), ("1d", False), ("thirty", False), ("P1DT", False),
])
def test_duration_pattern_as_the_api_server_applies_it(value, ok):
    # The API server applies `pattern` with Go's RE2 (search semantics, anchors in the pattern);
    # the pattern avoids lookarounds so Python's re reads it the same way.
    assert bool(re.search(DURATION_PATTERN, value)) is ok
    assert "(?" not in DURATION_PATTERN


def test_render_is_deterministic_and_parses():
    for info in KINDS.values():
        text = render(info)
        assert text == render(info)
        assert yaml.safe_load(text) == crd(info)
