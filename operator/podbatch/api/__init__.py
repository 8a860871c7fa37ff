"""The podbatch API: pydantic models of every kind, the single source of the CRD schemas.

`KINDS` maps each kind to its model and CRD names; `crdgen` turns it into
crds/*.yaml. This package must stay free of kopf and Kubernetes clients.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from podbatch import API_VERSION, GROUP, VERSION
from podbatch.api.common import Condition, Duration, KindModel, parse_duration
from podbatch.api.grant import PoolGrant, PoolGrantSpec, PoolGrantStatus
from podbatch.api.job import Job, JobSpec, JobStatus
from podbatch.api.jobschedule import JobSchedule, JobScheduleSpec, JobScheduleStatus
from podbatch.api.node import ComputeNode, ComputeNodeSpec, ComputeNodeStatus
from podbatch.api.pool import Pool, PoolSpec, PoolStatus
from podbatch.api.task import Task, TaskSpec, TaskStatus
from podbatch.api.taskcollection import TaskCollection


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0
    format: str = ""

    def to_crd(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.format:
            out["format"] = self.format
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class KindInfo:
    kind: str
    model: type[KindModel]
    plural: str
    singular: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...] = field(default=())
    namespaced: bool = True
    categories: tuple[str, ...] = ("podbatch",)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


KINDS: dict[str, KindInfo] = {
    "Pool": KindInfo("Pool", Pool, "pools", "pool", ("bpool",), (
        PrinterColumn("State", "string", ".status.allocationState", "allocation state"),
        PrinterColumn("Dedicated", "integer", ".status.currentDedicatedNodes", "current dedicated nodes"),
        PrinterColumn("Target", "integer", ".spec.targetDedicatedNodes", "target dedicated nodes"),
        PrinterColumn("LowPri", "integer", ".status.currentLowPriorityNodes", "current low-priority nodes", priority=1),
        PrinterColumn("Slots", "integer", ".spec.taskSlotsPerNode", "task slots per node"),
        PrinterColumn("Idle", "integer", ".status.nodeCounts.idle", "idle nodes", priority=1),
        PrinterColumn("Running", "integer", ".status.nodeCounts.running", "nodes running tasks", priority=1),
        PrinterColumn("AutoScale", "boolean", ".spec.enableAutoScale", priority=1),
        AGE,
    )),
    "ComputeNode": KindInfo("ComputeNode", ComputeNode, "computenodes", "computenode", ("bnode",), (
        PrinterColumn("Pool", "string", ".spec.poolName"),
        PrinterColumn("Node", "string", ".spec.nodeName", "Kubernetes Node"),
        PrinterColumn("State", "string", ".status.state"),
        PrinterColumn("Scheduling", "string", ".spec.schedulingState", priority=1),
        PrinterColumn("Running", "integer", ".status.runningTasksCount", "running tasks"),
        PrinterColumn("Slots", "integer", ".status.runningTaskSlotsCount", "busy task slots", priority=1),
        PrinterColumn("Succeeded", "integer", ".status.totalTasksSucceeded", priority=1),
        AGE,
    )),
    "Job": KindInfo("Job", Job, "jobs", "job", ("bjob",), (
        PrinterColumn("Pool", "string", ".spec.poolInfo.poolId"),
        PrinterColumn("Priority", "integer", ".spec.priority"),
        PrinterColumn("State", "string", ".status.state"),
        PrinterColumn("Active", "integer", ".status.taskCounts.active"),
        PrinterColumn("Running", "integer", ".status.taskCounts.running"),
        PrinterColumn("Succeeded", "integer", ".status.taskCounts.succeeded"),
        PrinterColumn("Failed", "integer", ".status.taskCounts.failed"),
        AGE,
    )),
    "Task": KindInfo("Task", Task, "tasks", "task", ("btask",), (
        PrinterColumn("Job", "string", ".spec.jobName"),
        PrinterColumn("State", "string", ".status.state"),
        PrinterColumn("Node", "string", ".status.nodeInfo.nodeName"),
        PrinterColumn("Exit", "integer", ".status.executionInfo.exitCode", "exit code"),
        PrinterColumn("Retries", "integer", ".status.executionInfo.retryCount"),
        PrinterColumn("Requeues", "integer", ".status.executionInfo.requeueCount", priority=1),
        PrinterColumn("Reason", "string", ".status.pendingReason.reason", "why it waits", priority=1),
        AGE,
    )),
    "TaskCollection": KindInfo("TaskCollection", TaskCollection, "taskcollections", "taskcollection", ("btc",), (
        PrinterColumn("Job", "string", ".spec.jobName"),
        PrinterColumn("State", "string", ".status.state"),
        PrinterColumn("Size", "integer", ".status.size", "tasks in the collection"),
        PrinterColumn("Active", "integer", ".status.taskCounts.active"),
        PrinterColumn("Running", "integer", ".status.taskCounts.running"),
        PrinterColumn("Succeeded", "integer", ".status.taskCounts.succeeded"),
        PrinterColumn("Failed", "integer", ".status.taskCounts.failed"),
        AGE,
    )),
    "JobSchedule": KindInfo("JobSchedule", JobSchedule, "jobschedules", "jobschedule", ("bjs",), (
        PrinterColumn("State", "string", ".status.state"),
        PrinterColumn("Next Run", "date", ".status.executionInfo.nextRunTime"),
        PrinterColumn("Recent Job", "string", ".status.executionInfo.recentJob.name"),
        AGE,
    )),
    # Cluster-scoped, so that only cluster admins write it; out of the `podbatch` category,
    # so a namespace user's `kubectl get podbatch` is not refused for it.
    "PoolGrant": KindInfo("PoolGrant", PoolGrant, "poolgrants", "poolgrant", ("bgrant",), (
        PrinterColumn("Providers", "string", ".spec.providers", "allowed node-group providers"),
        PrinterColumn("MaxNodes", "integer", ".spec.maxNodes", "most nodes per namespace"),
        PrinterColumn("RootDir", "string", ".spec.nodeRootDir", "node directory root", priority=1),
        AGE,
    ), namespaced=False, categories=()),
}

CATEGORY = "podbatch"


class InvalidObject(ValueError):
    """An object that does not fit its kind's schema; the message names every bad field."""


def validate_object(body: dict[str, Any]) -> KindModel:
    """Validate a podbatch object strictly (unknown fields included) and return its model.

    A Kubernetes 1.20 API server prunes unknown fields silently, and only ≥1.25 servers
    reject them with fieldValidation=Strict; clients (the CLI) call this before sending.
    """
    from pydantic import ValidationError

    api_version = body.get("apiVersion")
    if api_version != API_VERSION:
        raise InvalidObject(f"apiVersion must be {API_VERSION}, not {api_version!r}")
    info = KINDS.get(body.get("kind", ""))
    if info is None:
        raise InvalidObject(f"kind must be one of {', '.join(KINDS)}, not {body.get('kind')!r}")
    try:
        return info.model.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-after", "constrained")))
            lines.append(f"{loc}: {err['msg']}")
        raise InvalidObject(f"invalid {info.kind} {body.get('metadata', {}).get('name', '')!r}:\n  " + "\n  ".join(lines)) from None


__all__ = [
    "API_VERSION", "CATEGORY", "GROUP", "KINDS", "VERSION",
    "ComputeNode", "ComputeNodeSpec", "ComputeNodeStatus", "Condition", "Duration",
    "InvalidObject", "Job", "JobSchedule", "JobScheduleSpec", "JobScheduleStatus", "JobSpec",
    "JobStatus", "KindInfo", "Pool", "PoolGrant", "PoolGrantSpec", "PoolGrantStatus", "PoolSpec", "PoolStatus", "PrinterColumn", "Task",
    "TaskCollection", "TaskSpec", "TaskStatus", "parse_duration", "validate_object",
]
