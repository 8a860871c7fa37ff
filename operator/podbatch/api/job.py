"""The Job kind: a collection of tasks bound to a pool, with priority, constraints and
the special tasks (job manager, preparation, release) of Azure Batch."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from podbatch import API_VERSION
from podbatch.api.common import (
    Condition,
    ContainerSettings,
    Duration,
    EnvironmentSettings,
    FailureInfo,
    KindModel,
    MetadataItems,
    OutputFiles,
    Priority,
    ResourceFiles,
    RetryCount,
    SpecModel,
    StatusModel,
    TaskConstraints,
    TaskExecutionResult,
    TaskId,
    UserIdentity,
    cel,
    conditions_field,
)
from podbatch.api.pool import PoolSpec


class AutoPoolSpecification(SpecModel):
    """A pool created for this job (or job schedule) and deleted with it unless keepAlive."""

    auto_pool_id_prefix: Optional[str] = None
    pool_lifetime_option: Literal["job", "jobschedule"] = "job"
    keep_alive: bool = False
    pool: PoolSpec


class PoolInformation(SpecModel):
    """The pool a job runs on: an existing pool by name, or an auto pool; exactly one."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("has(self.poolId) != has(self.autoPoolSpecification)",
         "poolInfo needs exactly one of poolId and autoPoolSpecification"),
    ))

    pool_id: Optional[str] = None
    """Name of a Pool in the job's namespace."""
    auto_pool_specification: Optional[AutoPoolSpecification] = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "PoolInformation":
        if (self.pool_id is None) == (self.auto_pool_specification is None):
            raise ValueError("poolInfo needs exactly one of poolId and autoPoolSpecification")
        return self


class JobConstraints(SpecModel):
    max_wall_clock_time: Optional[Duration] = None
    """Longest the job may run from its creation; unset means unlimited."""
    max_task_retry_count: RetryCount = 0
    """Default retries of each task on non-zero exit; -1 unlimited."""


class AuthenticationTokenSettings(SpecModel):
    access: Optional[list[Literal["job"]]] = None


class JobManagerTask(SpecModel):
    """Started first; with killJobOnCompletion its completion completes the job."""

    id: TaskId = "jobmanager"
    display_name: Optional[str] = None
    command_line: str
    container_settings: Optional[ContainerSettings] = None
    resource_files: Optional[ResourceFiles] = None
    output_files: Optional[OutputFiles] = None
    environment_settings: Optional[EnvironmentSettings] = None
    constraints: Optional[TaskConstraints] = None
    required_slots: Annotated[int, Field(ge=1)] = 1
    kill_job_on_completion: bool = True
    run_exclusive: bool = True
    allow_low_priority_node: bool = True
    user_identity: Optional[UserIdentity] = None
    authentication_token_settings: Optional[AuthenticationTokenSettings] = None


class JobPreparationTask(SpecModel):
    """Runs on a node before the job's first task there."""

    id: TaskId = "jobpreparation"
    command_line: str
    container_settings: Optional[ContainerSettings] = None
    resource_files: Optional[ResourceFiles] = None
    environment_settings: Optional[EnvironmentSettings] = None
    constraints: Optional[TaskConstraints] = None
    wait_for_success: bool = True
    user_identity: Optional[UserIdentity] = None
    rerun_on_node_reboot_after_success: bool = True


class JobReleaseTask(SpecModel):
    """Runs on every node that ran the job's preparation task, when the job ends."""

    id: TaskId = "jobrelease"
    command_line: str
    container_settings: Optional[ContainerSettings] = None
    resource_files: Optional[ResourceFiles] = None
    environment_settings: Optional[EnvironmentSettings] = None
    max_wall_clock_time: Duration = "PT15M"
    retention_time: Duration = "P7D"
    user_identity: Optional[UserIdentity] = None


class JobSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra=cel(
        ("!has(self.jobManagerTask) || !has(self.jobPreparationTask) || self.jobManagerTask.id != self.jobPreparationTask.id",
         "jobManagerTask and jobPreparationTask need different ids"),
    ))

    pool_info: PoolInformation
    display_name: Optional[str] = None
    priority: Priority = 0
    """-1000 (lowest) to 1000 (highest); higher-priority jobs' tasks are scheduled first."""
    max_parallel_tasks: Annotated[int, Field(ge=-1, json_schema_extra=cel(
        ("self == -1 || self >= 1", "maxParallelTasks must be -1 (unlimited) or at least 1")))] = -1
    allow_task_preemption: bool = False
    constraints: Optional[JobConstraints] = None
    job_manager_task: Optional[JobManagerTask] = None
    job_preparation_task: Optional[JobPreparationTask] = None
    job_release_task: Optional[JobReleaseTask] = None
    common_environment_settings: Optional[EnvironmentSettings] = None
    on_all_tasks_complete: Literal["noaction", "terminatejob"] = "noaction"
    on_task_failure: Literal["noaction", "performexitoptionsjobaction"] = "noaction"
    uses_task_dependencies: bool = False
    metadata: Optional[MetadataItems] = None
    desired_state: Literal["active", "disabled", "terminated"] = "active"
    """Set to disabled to stop scheduling new tasks, terminated to end the job."""
    disable_tasks: Literal["requeue", "terminate", "wait"] = "requeue"
    """What happens to running tasks when the job is disabled."""
    terminate_reason: Optional[str] = None
    ttl_seconds_after_finished: Optional[Annotated[int, Field(ge=0)]] = None
    """Not in Azure Batch (a completed Batch job stays until deleted); as Kubernetes' Job
    field of the same name: the Job, its Tasks and their pods are deleted this many seconds
    after the job completed. Unset: kept until deleted."""

    @model_validator(mode="after")
    def _checks(self) -> "JobSpec":
        if self.max_parallel_tasks == 0:
            raise ValueError("maxParallelTasks must be -1 (unlimited) or at least 1")
        if (self.job_manager_task and self.job_preparation_task
                and self.job_manager_task.id == self.job_preparation_task.id):
            raise ValueError("jobManagerTask and jobPreparationTask need different ids")
        return self


class JobExecutionInfo(StatusModel):
    start_time: Optional[datetime] = None
    end_time: Optional[datetime] = None
    pool_id: Optional[str] = None
    terminate_reason: Optional[str] = None
    scheduling_error: Optional[FailureInfo] = None


class TaskCounts(StatusModel):
    active: int = 0
    running: int = 0
    completed: int = 0
    succeeded: int = 0
    failed: int = 0


class NodeTaskInfo(StatusModel):
    """A preparation or release task's run on one node."""

    node_name: str
    state: Optional[Literal["running", "completed"]] = None
    exit_code: Optional[int] = None
    start_time: Optional[datetime] = None
    end_time: Optional[datetime] = None
    retry_count: int = 0
    result: Optional[TaskExecutionResult] = None


JobState = Literal["active", "disabling", "disabled", "enabling", "terminating", "completed", "deleting"]


class JobStatus(StatusModel):
    state: Optional[JobState] = None
    state_transition_time: Optional[datetime] = None
    previous_state: Optional[JobState] = None
    execution_info: Optional[JobExecutionInfo] = None
    task_counts: Optional[TaskCounts] = None
    task_slot_counts: Optional[TaskCounts] = None
    preparation_tasks: Optional[list[NodeTaskInfo]] = None
    release_tasks: Optional[list[NodeTaskInfo]] = None
    conditions: Optional[list[Condition]] = conditions_field()
    observed_generation: Optional[int] = None


class Job(KindModel):
    """A job: tasks bound to a pool (Azure Batch job)."""

    api_version: str = API_VERSION
    kind: str = "Job"
    metadata: dict = Field(default_factory=dict)
    spec: JobSpec
    status: Optional[JobStatus] = None
