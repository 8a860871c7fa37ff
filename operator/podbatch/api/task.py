"""The Task kind: one unit of work of a job, run as one pod per attempt (or a gang of
pods for a multi-instance task).

A task names its job with `spec.jobName` and carries its Batch id in `spec.id`
(default: metadata.name), unique within the job; `dependsOn` refers to these ids.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from podbatch import API_VERSION
from podbatch.api.common import (
    ApplicationPackageReferences,
    Condition,
    ContainerSettings,
    EnvironmentSettings,
    ExitConditions,
    FailureInfo,
    IntOrString,
    KindModel,
    OutputFiles,
    Priority,
    ResourceFiles,
    SpecModel,
    StatusModel,
    TaskConstraints,
    TaskExecutionResult,
    TaskId,
    UserIdentity,
    cel,
    conditions_field,
)


class TaskIdRange(SpecModel):
    """Task ids start..end inclusive, for tasks whose ids are integers."""

    model_config = ConfigDict(json_schema_extra=cel(("self.start <= self.end", "start must not be greater than end")))

    start: Annotated[int, Field(ge=0)]
    end: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _ordered(self) -> "TaskIdRange":
        if self.start > self.end:
            raise ValueError("start must not be greater than end")
        return self


class TaskDependencies(SpecModel):
    """Tasks of the same job that must complete (successfully, unless their
    exitConditions say satisfy) before this one runs; the job needs usesTaskDependencies."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("(has(self.taskIds) && size(self.taskIds) > 0) || (has(self.taskIdRanges) && size(self.taskIdRanges) > 0)",
         "dependsOn needs taskIds or taskIdRanges"),
    ))

    task_ids: Optional[Annotated[list[TaskId], Field(max_length=10000)]] = None
    task_id_ranges: Optional[Annotated[list[TaskIdRange], Field(max_length=1000)]] = None

    @model_validator(mode="after")
    def _not_empty(self) -> "TaskDependencies":
        if not self.task_ids and not self.task_id_ranges:
            raise ValueError("dependsOn needs taskIds or taskIdRanges")
        return self


class AffinityInformation(SpecModel):
    affinity_id: str
    """A node name (or ComputeNode name) the task prefers to run on."""


class MultiInstanceSettings(SpecModel):
    """Run the task as a gang of pods on numberOfInstances distinct nodes."""

    number_of_instances: Annotated[int, Field(ge=1)] = 1
    coordination_command_line: Optional[str] = None
    """Runs on every instance; the primary then runs commandLine."""
    common_resource_files: Optional[ResourceFiles] = None


class ResourceRequirements(SpecModel):
    """Kubernetes resource requests and limits of the task's container (beyond Batch)."""

    requests: Optional[dict[str, IntOrString]] = None
    limits: Optional[dict[str, IntOrString]] = None


class TaskSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra=cel(
        ("!has(self.id) || !has(self.dependsOn) || !has(self.dependsOn.taskIds) || !(self.id in self.dependsOn.taskIds)",
         "a task cannot depend on itself"),
        ("!has(self.multiInstanceSettings) || self.multiInstanceSettings.numberOfInstances == 1 || !has(self.requiredSlots) || self.requiredSlots == 1",
         "a multi-instance task takes one slot per instance: requiredSlots must be 1"),
    ))

    job_name: str
    """Name of the Job (in the same namespace) this task belongs to."""
    id: Optional[TaskId] = None
    """Batch task id, unique within the job; defaults to metadata.name."""
    display_name: Optional[str] = None
    command_line: str
    """Run by /bin/sh -c in the task's container, as in Batch on Linux."""
    container_settings: Optional[ContainerSettings] = None
    resource_files: Optional[ResourceFiles] = None
    output_files: Optional[OutputFiles] = None
    environment_settings: Optional[EnvironmentSettings] = None
    constraints: Optional[TaskConstraints] = None
    required_slots: Annotated[int, Field(ge=1)] = 1
    priority: Priority = 0
    """Order of the task within its job: higher first."""
    affinity_info: Optional[AffinityInformation] = None
    exit_conditions: Optional[ExitConditions] = None
    depends_on: Optional[TaskDependencies] = None
    multi_instance_settings: Optional[MultiInstanceSettings] = None
    user_identity: Optional[UserIdentity] = None
    application_package_references: Optional[ApplicationPackageReferences] = None
    resources: Optional[ResourceRequirements] = None
    desired_state: Literal["active", "terminated"] = "active"
    """Set to terminated to end the task (Batch's terminate task)."""
    reactivate_request_id: Optional[str] = None
    """Write a new value to reactivate a completed task (Batch's reactivate task)."""

    @model_validator(mode="after")
    def _checks(self) -> "TaskSpec":
        if self.id and self.depends_on and self.depends_on.task_ids and self.id in self.depends_on.task_ids:
            raise ValueError("a task cannot depend on itself")
        if (self.multi_instance_settings and self.multi_instance_settings.number_of_instances > 1
                and self.required_slots != 1):
            raise ValueError("a multi-instance task takes one slot per instance: requiredSlots must be 1")
        return self


TaskState = Literal["active", "preparing", "running", "completed"]


class TaskExecutionInfo(StatusModel):
    start_time: Optional[datetime] = None
    end_time: Optional[datetime] = None
    exit_code: Optional[int] = None
    result: Optional[TaskExecutionResult] = None
    failure_info: Optional[FailureInfo] = None
    retry_count: int = 0
    """Attempts after the first that followed a failure (non-zero exit)."""
    requeue_count: int = 0
    """Attempts after the first that followed a lost node or an evicted pod."""
    last_retry_time: Optional[datetime] = None
    last_requeue_time: Optional[datetime] = None


class TaskNodeInfo(StatusModel):
    pool_id: Optional[str] = None
    node_id: Optional[str] = None
    """The ComputeNode's name."""
    node_name: Optional[str] = None
    """The Kubernetes Node's name."""
    task_root_directory: Optional[str] = None
    affinity_id: Optional[str] = None


class PendingReason(StatusModel):
    """Why an active task is not running yet."""

    reason: str
    message: Optional[str] = None
    queue_position: Optional[int] = None


class SubtaskInfo(StatusModel):
    id: int
    state: Optional[TaskState] = None
    node_name: Optional[str] = None
    pod_name: Optional[str] = None
    ip_address: Optional[str] = None
    """The instance's pod IP: where the other instances reach it (its entry in AZ_BATCH_HOST_LIST)."""
    exit_code: Optional[int] = None
    start_time: Optional[datetime] = None
    end_time: Optional[datetime] = None


class TaskStatus(StatusModel):
    state: Optional[TaskState] = None
    state_transition_time: Optional[datetime] = None
    previous_state: Optional[TaskState] = None
    execution_info: Optional[TaskExecutionInfo] = None
    node_info: Optional[TaskNodeInfo] = None
    pending_reason: Optional[PendingReason] = None
    attempt: int = 0
    """Number of the current (or last) pod attempt, from 1."""
    pod_name: Optional[str] = None
    stopping_pods: Optional[list[str]] = None
    """Pods of the previous attempt that were told to stop and may still run. The next
    attempt is started only once each of them is gone or has ended (or its node is lost
    past its grace), so two attempts of a task never run at the same time."""
    subtasks: Optional[list[SubtaskInfo]] = None
    handled_reactivate_request_id: Optional[str] = None
    conditions: Optional[list[Condition]] = conditions_field()
    observed_generation: Optional[int] = None


class Task(KindModel):
    """A task of a job (Azure Batch task)."""

    api_version: str = API_VERSION
    kind: str = "Task"
    metadata: dict = Field(default_factory=dict)
    spec: TaskSpec
    status: Optional[TaskStatus] = None

    @property
    def task_id(self) -> str:
        """The Batch task id: spec.id, or metadata.name."""
        return self.spec.id or self.metadata.get("name", "")
