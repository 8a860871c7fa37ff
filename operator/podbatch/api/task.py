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
from podbatch.api.podtemplate import PodTemplate


class TaskIdRange(SpecModel):
    """Task ids start..end inclusive, for tasks whose ids are integers."""

    model_config = ConfigDict(json_schema_extra=cel(("self.start <= self.end", "start must not be greater than end")))

    start: Annotated[int, Field(ge=0)]
    """First task id of the range."""
    end: Annotated[int, Field(ge=0)]
    """Last task id of the range (inclusive)."""

    @model_validator(mode="after")
    def _ordered(self) -> "TaskIdRange":
        if self.start > self.end:
            raise ValueError("start must not be greater than end")
        return self


class TaskDependencies(SpecModel):
    """Tasks of the same job that must complete (successfully, unless their
    exitConditions say satisfy) before this one runs. Only read when the job has
    usesTaskDependencies: true; otherwise the task does not wait. While it waits its
    pendingReason is WaitingForDependencies (DependencyCycle for a cycle)."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("(has(self.taskIds) && size(self.taskIds) > 0) || (has(self.taskIdRanges) && size(self.taskIdRanges) > 0)",
         "dependsOn needs taskIds or taskIdRanges"),
    ))

    task_ids: Optional[Annotated[list[TaskId], Field(max_length=10000)]] = None
    """Batch ids (spec.id, or metadata.name) of tasks of the same job; an id no task has
    yet keeps this one waiting."""
    task_id_ranges: Optional[Annotated[list[TaskIdRange], Field(max_length=1000)]] = None
    """Ranges of integer task ids of the same job."""

    @model_validator(mode="after")
    def _not_empty(self) -> "TaskDependencies":
        if not self.task_ids and not self.task_id_ranges:
            raise ValueError("dependsOn needs taskIds or taskIdRanges")
        return self


class AffinityInformation(SpecModel):
    """A locality hint, as in Batch: a soft affinity to one node of the job's pool."""

    affinity_id: str
    """The ComputeNode the task prefers: its name, as a task that ran there reports it in
    status.nodeInfo.affinityId. When that node is ready and has the slots (and resources)
    the task needs as the task's turn comes, the task goes there, whatever the pool's
    nodeFillType; otherwise it runs on another node at once (it never waits for this one).
    A multi-instance task's primary takes it. An unknown name is no error."""


class MultiInstanceSettings(SpecModel):
    """Run the task as a gang of pods on numberOfInstances distinct nodes."""

    number_of_instances: Annotated[int, Field(ge=1)] = 1
    """How many pods, each on its own node of the pool, placed all at once or not at all.
    More than 1 needs a pool with enableInterNodeCommunication."""
    coordination_command_line: Optional[str] = None
    """Runs on every instance first, split like commandLine, once AZ_BATCH_HOST_LIST is
    known; the primary then runs commandLine, the others wait until it ends. Daemons it
    starts keep running. A non-zero exit fails the whole task."""
    common_resource_files: Optional[ResourceFiles] = None
    """Downloaded by every instance, the primary too, into $AZ_BATCH_TASK_DIR (not the
    working directory); the task's own resourceFiles reach the primary only."""


class ResourceRequirements(SpecModel):
    """Kubernetes resource requests and limits of the task's container (beyond Batch)."""

    requests: Optional[dict[str, IntOrString]] = None
    """Resource requests of the task's container (cpu, memory, …). podbatch places tasks
    by task slots, not by these; the kubelet enforces them."""
    limits: Optional[dict[str, IntOrString]] = None
    """Resource limits of the task's container."""


class TaskSpec(SpecModel):
    """What the task runs and how; see Azure Batch's task and podbatch's departures."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("!has(self.id) || !has(self.dependsOn) || !has(self.dependsOn.taskIds) || !(self.id in self.dependsOn.taskIds)",
         "a task cannot depend on itself"),
        ("!has(self.multiInstanceSettings) || self.multiInstanceSettings.numberOfInstances == 1 || !has(self.requiredSlots) || self.requiredSlots == 1",
         "a multi-instance task takes one slot per instance: requiredSlots must be 1"),
    ))

    job_name: str
    """Name of the Job (in the same namespace) this task belongs to."""
    id: Optional[TaskId] = None
    """Batch task id, unique within the job; defaults to metadata.name. A Task whose id
    another Task of the job already has (the one created first keeps it), or that is the
    id of the job's preparation or release task, is refused (InvalidSpec) and never
    runs."""
    display_name: Optional[str] = None
    """A name for people; podbatch keeps it and does not use it."""
    command_line: str
    """The command. As in Batch it is not run by a shell: it is split into words like a
    shell would (quotes, backslashes) and run directly, so `$VAR`, pipes, redirections and
    globs are not interpreted; write `/bin/sh -c '...'` for those. A small busybox-sh
    wrapper runs it and tees its output into stdout.txt and stderr.txt in
    $AZ_BATCH_TASK_DIR, so the image needs /bin/sh. The exit code is the task's."""
    container_settings: Optional[ContainerSettings] = None
    """The image the task runs in (default: the pool's image) and its working directory."""
    resource_files: Optional[ResourceFiles] = None
    """Files downloaded into the working directory before the command starts (by an init
    container); a failed download completes the task with failure (no retry)."""
    output_files: Optional[OutputFiles] = None
    """Files uploaded after the command ends, per uploadCondition."""
    environment_settings: Optional[EnvironmentSettings] = None
    """Environment variables of the task, over the job's commonEnvironmentSettings; the
    AZ_BATCH_* variables podbatch sets win over both."""
    constraints: Optional[TaskConstraints] = None
    """Wall-clock limit, retention and retries."""
    required_slots: Annotated[int, Field(ge=1)] = 1
    """Task slots of one node the task takes. More than the pool's taskSlotsPerNode leaves
    it waiting with RequiredSlotsExceedNode. A multi-instance task takes 1 per instance."""
    priority: Priority = 0
    """Order of the task within its job, higher first (beyond Batch, which has job
    priority only); jobs of equal priority still take turns."""
    affinity_info: Optional[AffinityInformation] = None
    """Prefer a node of the pool when it has room (a soft affinity, as in Batch)."""
    exit_conditions: Optional[ExitConditions] = None
    """What the task's way of ending means for the job (with onTaskFailure
    performexitoptionsjobaction) and for tasks that depend on it."""
    depends_on: Optional[TaskDependencies] = None
    """Tasks that must complete first (only with the job's usesTaskDependencies)."""
    multi_instance_settings: Optional[MultiInstanceSettings] = None
    """Run as a gang of pods on distinct nodes (MPI-style)."""
    user_identity: Optional[UserIdentity] = None
    """Who the command runs as (default: uid 1000)."""
    application_package_references: Optional[ApplicationPackageReferences] = None
    """Application packages unpacked on the node before the task runs, each named by an
    AZ_BATCH_APP_PACKAGE_* variable (with the pool's own packages)."""
    resources: Optional[ResourceRequirements] = None
    """Kubernetes requests and limits of the task's container (beyond Batch)."""
    pod_template: Optional[PodTemplate] = None
    """Beyond Batch: volumes, sidecars, env from Secrets, labels, … added to this task's
    pods, over the pool's and the job's templates (docs/podtemplates.md)."""
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
    """The current (or last) attempt's run, and counts over all attempts."""

    start_time: Optional[datetime] = None
    """When the current attempt's container started."""
    end_time: Optional[datetime] = None
    """When the task completed."""
    exit_code: Optional[int] = None
    """The command's exit code (none when it never ran or was terminated)."""
    result: Optional[TaskExecutionResult] = None
    """success or failure, once completed."""
    failure_info: Optional[FailureInfo] = None
    """Why it failed: FailureExitCode, TaskEnded, a download or upload error."""
    retry_count: int = 0
    """Attempts after the first that followed a failure (non-zero exit)."""
    requeue_count: int = 0
    """Attempts after the first that followed a lost node or an evicted pod."""
    last_retry_time: Optional[datetime] = None
    """When the last retry was decided."""
    last_requeue_time: Optional[datetime] = None
    """When the last requeue was decided."""


class TaskNodeInfo(StatusModel):
    """Where the current attempt runs (the primary's node for a multi-instance task)."""

    pool_id: Optional[str] = None
    """The Pool's name."""
    node_id: Optional[str] = None
    """The ComputeNode's name."""
    node_name: Optional[str] = None
    """The Kubernetes Node's name."""
    task_root_directory: Optional[str] = None
    """The task's directory on the node ($AZ_BATCH_TASK_DIR): stdout.txt, stderr.txt, wd/."""
    affinity_id: Optional[str] = None
    """The node's affinity id (the ComputeNode's name): give it as another task's
    affinityInfo.affinityId to prefer this node."""


class PendingReason(StatusModel):
    """Why an active task is not running yet."""

    reason: str
    """Why it waits: NoNodeReady, AllSlotsBusy, HigherPriorityJobAhead,
    MaxParallelTasksReached, JobDisabled, JobNotFound, PoolNotFound,
    RequiredSlotsExceedNode, NotEnoughNodes, WaitingForGangNodes, WaitingForPreemption,
    JobPreparationFailed, WaitingForDependencies, DependencyCycle,
    InterNodeCommunicationDisabled, Retrying or Requeued (docs/troubleshooting.md)."""
    message: Optional[str] = None
    """The details, for a person."""
    queue_position: Optional[int] = None
    """1-based place in the pool's queue when the reason was last written (not live); 0
    when the task is not in the queue (its job, pool or dependencies stop it)."""


class SubtaskInfo(StatusModel):
    """One instance of a multi-instance task."""

    id: int
    """The instance's index; 0 is the primary."""
    state: Optional[TaskState] = None
    """The instance's state, following the task's."""
    node_name: Optional[str] = None
    """The ComputeNode the instance runs on."""
    pod_name: Optional[str] = None
    """The instance's pod."""
    ip_address: Optional[str] = None
    """The instance's pod IP: where the other instances reach it (its entry in AZ_BATCH_HOST_LIST)."""
    exit_code: Optional[int] = None
    """Batch's per-instance exit code; podbatch does not write it today (the task's
    executionInfo.exitCode is the primary's)."""
    start_time: Optional[datetime] = None
    """Batch's per-instance start time; podbatch does not write it today."""
    end_time: Optional[datetime] = None
    """Batch's per-instance end time; podbatch does not write it today."""


class TaskStatus(StatusModel):
    """The task's Batch state, written by podbatch."""

    state: Optional[TaskState] = None
    """active (waiting to be placed), preparing (bound to a node: its pod starts, or the
    job's preparation task runs there first), running, completed."""
    state_transition_time: Optional[datetime] = None
    """When state last changed."""
    previous_state: Optional[TaskState] = None
    """The state before the last change."""
    execution_info: Optional[TaskExecutionInfo] = None
    """The run: times, exit code, result, failure, retries and requeues."""
    node_info: Optional[TaskNodeInfo] = None
    """Where the current attempt runs."""
    pending_reason: Optional[PendingReason] = None
    """Why an active task is not running yet. Written when the reason changes, once the
    task has waited 5 s and is within the first PODBATCH_PENDING_REASON_LIMIT (100)
    places of its pool's queue; reasons only the user can fix at once."""
    attempt: int = 0
    """Number of the current (or last) pod attempt, from 1."""
    pod_name: Optional[str] = None
    """The current attempt's pod, `<task>-<attempt>`."""
    stopping_pods: Optional[list[str]] = None
    """Pods of the previous attempt that were told to stop and may still run. The next
    attempt is started only once each of them is gone or has ended (or its node is lost
    past its grace), so two attempts of a task never run at the same time."""
    subtasks: Optional[list[SubtaskInfo]] = None
    """The instances of a multi-instance task's current attempt."""
    handled_reactivate_request_id: Optional[str] = None
    """The last spec.reactivateRequestId podbatch acted on."""
    conditions: Optional[list[Condition]] = conditions_field()
    observed_generation: Optional[int] = None
    """The metadata.generation last acted on."""


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
