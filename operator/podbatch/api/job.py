"""The Job kind: a collection of tasks bound to a pool, with priority, constraints and
the special tasks (job manager, preparation, release) of Azure Batch."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from podbatch import API_VERSION
from podbatch.api.common import (
    ApplicationPackageReferences,
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
from podbatch.api.podtemplate import PodTemplate
from podbatch.api.pool import PoolSpec


class AutoPoolSpecification(SpecModel):
    """A pool created for this job (or job schedule) and deleted with it unless keepAlive."""

    auto_pool_id_prefix: Optional[str] = None
    """The pool is named <prefix>-<job> (or <prefix>-<schedule> with poolLifetimeOption
    jobschedule); default prefix `auto`. The name is deterministic, so a restarted
    operator finds the pool instead of making another."""
    pool_lifetime_option: Literal["job", "jobschedule"] = "job"
    """job: one pool per job, owned by it, deleted when the job completes. jobschedule:
    one pool shared by the jobs of a JobSchedule, owned by the schedule and deleted when
    the schedule completes (on a Job no schedule made: owned by the job, kept when it
    completes). Deleting the owner always deletes the pool."""
    keep_alive: bool = False
    """Keep the pool after its job or schedule completes (it still goes when the owner
    is deleted)."""
    pool: PoolSpec
    """The spec of the pool to create (see Pool.spec)."""


class PoolInformation(SpecModel):
    """The pool a job runs on: an existing pool by name, or an auto pool; exactly one."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("has(self.poolId) != has(self.autoPoolSpecification)",
         "poolInfo needs exactly one of poolId and autoPoolSpecification"),
    ))

    pool_id: Optional[str] = None
    """Name of a Pool in the job's namespace."""
    auto_pool_specification: Optional[AutoPoolSpecification] = None
    """A pool podbatch creates for this job (or its job schedule)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "PoolInformation":
        if (self.pool_id is None) == (self.auto_pool_specification is None):
            raise ValueError("poolInfo needs exactly one of poolId and autoPoolSpecification")
        return self


class JobConstraints(SpecModel):
    """Limits of the job."""

    max_wall_clock_time: Optional[Duration] = None
    """Longest the job may run from its creation; past it the job terminates
    (terminateReason MaxWallClockTimeExpiry) and its running tasks are terminated. Unset
    means unlimited."""
    max_task_retry_count: RetryCount = 0
    """Default retries of each task on non-zero exit; -1 unlimited."""


class AuthenticationTokenSettings(SpecModel):
    """What the job manager may do through the API."""

    access: Optional[list[Literal["job"]]] = None
    """[job]: the job manager's pod runs under a ServiceAccount (<job>-jobmanager) that
    may read, create, change and delete the Tasks and Jobs of its namespace (Batch: a
    token for the job's operations)."""


class JobManagerTask(SpecModel):
    """Started first; with killJobOnCompletion its completion completes the job."""

    id: TaskId = "jobmanager"
    """The task's Batch id; the Task podbatch creates for it is named <job>-<id> and
    labelled podbatch.io/job-manager."""
    display_name: Optional[str] = None
    """A name for people, copied to the Task."""
    command_line: str
    """The command, as a Task's commandLine (split, not run by a shell)."""
    container_settings: Optional[ContainerSettings] = None
    """Image and working directory, as on a Task."""
    resource_files: Optional[ResourceFiles] = None
    """Files downloaded before it runs, as on a Task."""
    output_files: Optional[OutputFiles] = None
    """Files uploaded after it ends, as on a Task."""
    environment_settings: Optional[EnvironmentSettings] = None
    """Its environment variables, as on a Task."""
    constraints: Optional[TaskConstraints] = None
    """Wall-clock limit, retention and retries, as on a Task."""
    required_slots: Annotated[int, Field(ge=1)] = 1
    """Task slots it takes."""
    kill_job_on_completion: bool = True
    """When it completes, the job terminates (terminateReason JMComplete) and its running
    tasks are terminated."""
    run_exclusive: bool = True
    """It needs a node with no other task running. It is placed before every other task
    of the pool; when nothing fits, running tasks of strictly lower-priority jobs with
    allowTaskPreemption are requeued to make room (with or without runExclusive)."""
    allow_low_priority_node: bool = True
    """Whether it may run on a low-priority (spot) node; false: the scheduler places it only
    on a dedicated node of the pool (it waits for one)."""
    user_identity: Optional[UserIdentity] = None
    """Who it runs as, as on a Task."""
    authentication_token_settings: Optional[AuthenticationTokenSettings] = None
    """API access for the job manager's pod."""
    application_package_references: Optional[ApplicationPackageReferences] = None
    """Application packages unpacked on the node before it runs, as on a Task."""


class JobPreparationTask(SpecModel):
    """Runs on a node before the job's first task there."""

    id: TaskId = "jobpreparation"
    """Its Batch id: its directory is workitems/<job>/job-1/<id> ($AZ_BATCH_JOB_PREP_DIR
    for the job's tasks on that node)."""
    command_line: str
    """The command, split and run without a shell like a Task's commandLine."""
    container_settings: Optional[ContainerSettings] = None
    """Image and working directory, as on a Task."""
    resource_files: Optional[ResourceFiles] = None
    """Files downloaded before it runs."""
    environment_settings: Optional[EnvironmentSettings] = None
    """Its environment variables (the job's commonEnvironmentSettings apply too)."""
    constraints: Optional[TaskConstraints] = None
    """maxWallClockTime and maxTaskRetryCount (unset: 0, not the job's) apply; retentionTime
    is not applied (its pods go with the Job)."""
    wait_for_success: bool = True
    """true: the job's tasks on a node stay preparing until it succeeded there, and once it
    failed for good there the job's tasks are requeued and kept off that node. false: they
    start without waiting for it."""
    user_identity: Optional[UserIdentity] = None
    """Who it runs as, as on a Task."""
    rerun_on_node_reboot_after_success: bool = True
    """true: it runs again on a node after the node's reboot or reimage. false: not again
    after a reboot, but still after a reimage (it wipes the node's directories), as in
    Batch."""


class JobReleaseTask(SpecModel):
    """Runs on every node that ran the job's preparation task, when the job ends."""

    id: TaskId = "jobrelease"
    """Its Batch id."""
    command_line: str
    """The command, split and run without a shell like a Task's commandLine. It runs once
    per node (no retries); the job is completed once it ended on every node that still
    exists."""
    container_settings: Optional[ContainerSettings] = None
    """Image and working directory, as on a Task."""
    resource_files: Optional[ResourceFiles] = None
    """Files downloaded before it runs."""
    environment_settings: Optional[EnvironmentSettings] = None
    """Its environment variables (the job's commonEnvironmentSettings apply too)."""
    max_wall_clock_time: Duration = "PT15M"
    """Longest it may run on a node (the pod's deadline)."""
    retention_time: Duration = "P7D"
    """Batch: how long its directory is kept. Not applied by podbatch today: its pods go
    with the Job."""
    user_identity: Optional[UserIdentity] = None
    """Who it runs as, as on a Task."""


class JobSpec(SpecModel):
    """The job's pool, priority, limits and special tasks."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("!has(self.jobManagerTask) || !has(self.jobPreparationTask) || self.jobManagerTask.id != self.jobPreparationTask.id",
         "jobManagerTask and jobPreparationTask need different ids"),
    ))

    pool_info: PoolInformation
    """The pool the job's tasks run on."""
    display_name: Optional[str] = None
    """A name for people; podbatch keeps it and does not use it."""
    priority: Priority = 0
    """-1000 (lowest) to 1000 (highest); higher-priority jobs' tasks are scheduled first."""
    max_parallel_tasks: Annotated[int, Field(ge=-1, json_schema_extra=cel(
        ("self == -1 || self >= 1", "maxParallelTasks must be -1 (unlimited) or at least 1")))] = -1
    """Most tasks of the job preparing or running at once; -1 unlimited. Others wait with
    MaxParallelTasksReached."""
    allow_task_preemption: bool = False
    """Whether this job's running tasks may be requeued (requeueCount, no retry used) to
    make room for a higher-priority job, as in Batch. false: they are never preempted.
    podbatch preempts only for the job manager task of a job of strictly higher
    priority; other tasks of higher-priority jobs wait for a free slot, ahead in the
    queue. Read at each scheduling pass, so a change applies at once."""
    constraints: Optional[JobConstraints] = None
    """Wall-clock limit and default task retries."""
    job_manager_task: Optional[JobManagerTask] = None
    """A task started before the others, as a Task <job>-<id>."""
    job_preparation_task: Optional[JobPreparationTask] = None
    """Runs on each node before the job's first task there."""
    job_release_task: Optional[JobReleaseTask] = None
    """Runs, when the job ends, on every node that ran its preparation task (needs a
    jobPreparationTask, as in Batch)."""
    common_environment_settings: Optional[EnvironmentSettings] = None
    """Environment variables of every task of the job (a task's own win)."""
    pod_template: Optional[PodTemplate] = None
    """Beyond Batch: volumes, sidecars, env from Secrets, labels, … added to the pods of
    every task of the job (job manager, preparation and release tasks included), over the
    pool's template and under each task's (docs/podtemplates.md)."""
    on_all_tasks_complete: Literal["noaction", "terminatejob"] = "noaction"
    """terminatejob: the job completes (terminateReason AllTasksComplete) once it has tasks
    and all are completed. noaction: it stays active until terminated."""
    on_task_failure: Literal["noaction", "performexitoptionsjobaction"] = "noaction"
    """performexitoptionsjobaction: a task that fails applies the jobAction of its
    exitConditions (terminate or disable the job); noaction: failures leave the job alone."""
    uses_task_dependencies: bool = False
    """Whether the tasks' dependsOn is honoured; false: dependsOn is ignored."""
    metadata: Optional[MetadataItems] = None
    """Name-value pairs for people and tools; podbatch keeps them and gives them no meaning."""
    desired_state: Literal["active", "disabled", "terminated"] = "active"
    """Set to disabled to stop scheduling new tasks, terminated to end the job."""
    disable_tasks: Literal["requeue", "terminate", "wait"] = "requeue"
    """What happens to running tasks when the job is disabled: requeue (back to the queue),
    terminate (they complete with failure) or wait (they finish)."""
    terminate_reason: Optional[str] = None
    """Batch's terminate reason: with desiredState terminated, the job's
    status.executionInfo.terminateReason (UserTerminate when unset). `kubectl podbatch job
    terminate --reason` sets both."""
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
    """The job's run."""

    start_time: Optional[datetime] = None
    """When the job was created (maxWallClockTime counts from here)."""
    end_time: Optional[datetime] = None
    """When the job completed."""
    pool_id: Optional[str] = None
    """The pool its tasks run on (the auto pool's name for an auto pool)."""
    terminate_reason: Optional[str] = None
    """Why it ended: UserTerminate (or the spec's terminateReason), MaxWallClockTimeExpiry,
    TaskFailed, JMComplete or AllTasksComplete."""
    scheduling_error: Optional[FailureInfo] = None
    """Why its tasks cannot be scheduled: PoolNotFound or NoPool."""


class TaskCounts(StatusModel):
    """Tasks of the job by state (or, in taskSlotCounts, the slots they take)."""

    active: int = 0
    """Waiting to run."""
    running: int = 0
    """Preparing or running."""
    completed: int = 0
    """Completed, with success or failure."""
    succeeded: int = 0
    """Completed with success."""
    failed: int = 0
    """Completed with failure."""


class NodeTaskInfo(StatusModel):
    """A preparation or release task's run on one node."""

    node_name: str
    """The ComputeNode it ran on."""
    state: Optional[Literal["running", "completed"]] = None
    """running or completed."""
    exit_code: Optional[int] = None
    """Its exit code."""
    start_time: Optional[datetime] = None
    """When its pod started."""
    end_time: Optional[datetime] = None
    """When it ended."""
    retry_count: int = 0
    """Retries made (preparation task only)."""
    result: Optional[TaskExecutionResult] = None
    """success or failure."""


JobState = Literal["active", "disabling", "disabled", "enabling", "terminating", "completed", "deleting"]


class JobStatus(StatusModel):
    """The job's Batch state, written by podbatch."""

    state: Optional[JobState] = None
    """active, disabling, disabled, enabling, terminating (running tasks and release
    tasks end), completed. podbatch does not set deleting (a deleted Job simply goes)."""
    state_transition_time: Optional[datetime] = None
    """When state last changed."""
    previous_state: Optional[JobState] = None
    """The state before the last change."""
    execution_info: Optional[JobExecutionInfo] = None
    """Start, end, pool, terminate reason and scheduling error."""
    task_counts: Optional[TaskCounts] = None
    """The job's tasks by state, exact."""
    task_slot_counts: Optional[TaskCounts] = None
    """The task slots of the job's tasks by state."""
    preparation_tasks: Optional[list[NodeTaskInfo]] = None
    """The preparation task's run on each node (beyond the Job object in Batch, which
    lists them through a separate call)."""
    release_tasks: Optional[list[NodeTaskInfo]] = None
    """The release task's run on each node."""
    conditions: Optional[list[Condition]] = conditions_field()
    observed_generation: Optional[int] = None
    """The metadata.generation last acted on."""


class Job(KindModel):
    """A job: tasks bound to a pool (Azure Batch job)."""

    api_version: str = API_VERSION
    kind: str = "Job"
    metadata: dict = Field(default_factory=dict)
    spec: JobSpec
    status: Optional[JobStatus] = None
